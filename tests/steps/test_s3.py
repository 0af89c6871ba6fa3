"""s3 against moto: the lifecycle, a private bucket, the site sync, and teardown of versions."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest
from botocore.exceptions import ClientError

from msctl.engine.model import Status
from msctl.resources import data
from msctl.steps.s3 import SITE_PREFIX
from tests.support.strict import Faults, StrictAws

from .conftest import Lab, assert_lifecycle

# sha256("<account>/<region>/<lab>")[:8] for moto's account, us-east-1 and the lab's name.
SUFFIX = hashlib.sha256(b"123456789012/us-east-1/microservices").hexdigest()[:8]
BUCKET = f"microservices-static-{SUFFIX}"

SITE = {
    "index.html": "<!doctype html><title>lab</title>",
    "css/style.css": "body { margin: 0 }",
    "js/app.js": "console.log('lab');",
    "img/logo.svg": "<svg xmlns='http://www.w3.org/2000/svg'/>",
    "config.json": '{"api": "/api"}',
}
TYPES = {
    "index.html": "text/html; charset=utf-8",
    "css/style.css": "text/css; charset=utf-8",
    "js/app.js": "text/javascript; charset=utf-8",
    "img/logo.svg": "image/svg+xml",
    "config.json": "application/json",
}


def s3():
    return boto3.client("s3", region_name="us-east-1")


def with_site(lab_config, site_dir, **top):
    return lab_config.model_copy(
        update={"s3": lab_config.s3.model_copy(update={"site_dir": site_dir}), **top}
    )


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "site"
    for key, text in SITE.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(text, encoding="utf-8")
    (root / ".DS_Store").write_bytes(b"\0")  # hidden files are not part of the site
    return root


@pytest.fixture
def lab(aws, lab_config, site, tmp_path):
    """The lab with its site directory pointed at a small site of the test's own."""
    return Lab(with_site(lab_config, site), tmp_path / "state")


def object_changes(lab, result) -> list[tuple[str, str]]:
    return [(c.action, c.name) for c in lab.changes(result, "s3") if c.kind == "object"]


def test_s3_lifecycle(lab):
    outputs = assert_lifecycle(
        lab, "s3", {("bucket", BUCKET), *(("object", SITE_PREFIX + key) for key in SITE)}
    )
    assert outputs == {
        "bucket": BUCKET,
        "bucket_arn": f"arn:aws:s3:::{BUCKET}",
        "bucket_regional_domain": f"{BUCKET}.s3.us-east-1.amazonaws.com",
    }
    assert s3().list_buckets()["Buckets"] == []


def test_s3_without_tag_permission_on_create_tags_the_bucket_after(lab):
    """A principal without s3:TagResource gets AccessDenied for CreateBucket with tags: the
    bucket is created untagged and tagged with PutBucketTagging (as Terraform does)."""
    strict = StrictAws(faults=Faults(deny_bucket_tags=True)).install(lab.ctx.session)
    lab.run("apply", ["s3"])
    assert strict.faults == {"bucket_tags_denied": 1}
    tags = {t["Key"]: t["Value"] for t in s3().get_bucket_tagging(Bucket=BUCKET)["TagSet"]}
    assert (tags["msctl:lab"], tags["msctl:step"]) == ("microservices", "s3")
    assert lab.changes(lab.run("plan", ["s3"]), "s3") == []


def test_s3_bucket_is_private_encrypted_owner_enforced_tagged_policy_untouched(lab):
    lab.run("apply", ["s3"])
    client = s3()
    block = client.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "IgnorePublicAcls": True,
        "BlockPublicPolicy": True,
        "RestrictPublicBuckets": True,
    }
    rules = client.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"][
        "Rules"
    ]
    assert [r["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] for r in rules] == ["AES256"]
    ownership = client.get_bucket_ownership_controls(Bucket=BUCKET)["OwnershipControls"]["Rules"]
    assert ownership == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    tags = {t["Key"]: t["Value"] for t in client.get_bucket_tagging(Bucket=BUCKET)["TagSet"]}
    assert tags["msctl:lab"] == "microservices"
    assert tags["msctl:step"] == "s3"
    assert tags["msctl:name"] == "microservices-static"
    # No public bucket policy (the seed's); the cloudfront step adds the OAC statement, and
    # a re-run keeps a policy it did not write.
    with pytest.raises(ClientError) as err:
        client.get_bucket_policy(Bucket=BUCKET)
    assert err.value.response["Error"]["Code"] == "NoSuchBucketPolicy"
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowCloudFront",
                "Effect": "Allow",
                "Principal": {"Service": "cloudfront.amazonaws.com"},
                "Action": "s3:GetObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/*",
            }
        ],
    }
    client.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    assert lab.changes(lab.run("apply", ["s3"]), "s3") == []
    assert json.loads(client.get_bucket_policy(Bucket=BUCKET)["Policy"]) == policy


def test_s3_uploads_the_site_with_content_types_and_md5(lab):
    applied = lab.run("apply", ["s3"])
    assert sorted(object_changes(lab, applied)) == sorted(("create", SITE_PREFIX + k) for k in SITE)
    client = s3()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert sorted(keys) == sorted(SITE_PREFIX + k for k in SITE)  # no .DS_Store
    for key, text in SITE.items():
        head = client.head_object(Bucket=BUCKET, Key=SITE_PREFIX + key)
        assert head["ContentType"] == TYPES[key], key
        md5 = hashlib.md5(text.encode()).hexdigest()
        assert head["Metadata"]["md5"] == md5
        assert head["ETag"].strip('"') == md5
        body = client.get_object(Bucket=BUCKET, Key=SITE_PREFIX + key)["Body"].read()
        assert body == text.encode()


def test_s3_reuploads_exactly_the_changed_file(lab, site):
    lab.run("apply", ["s3"])
    (site / "css" / "style.css").write_text("body { margin: 1em }", encoding="utf-8")

    plan = lab.run("plan", ["s3"])
    assert lab.changes(plan, "s3")[0].detail == "content changed: upload"
    assert object_changes(lab, plan) == [("update", "site/css/style.css")]
    lab.recorder.calls.clear()
    applied = lab.run("apply", ["s3"])
    assert object_changes(lab, applied) == [("update", "site/css/style.css")]
    assert lab.recorder.mutating() == [("s3", "PutObject")]
    body = s3().get_object(Bucket=BUCKET, Key="site/css/style.css")["Body"].read()
    assert body == b"body { margin: 1em }"
    assert lab.changes(lab.run("plan", ["s3"]), "s3") == []


def test_s3_deletes_removed_files_but_never_other_prefixes(lab, site):
    lab.run("apply", ["s3"])
    client = s3()
    client.put_object(Bucket=BUCKET, Key="notifications/x.json", Body=b'{"n": 1}')
    (site / "config.json").unlink()

    plan = lab.run("plan", ["s3"])
    assert object_changes(lab, plan) == [("delete", "site/config.json")]
    lab.recorder.calls.clear()
    applied = lab.run("apply", ["s3"])
    assert object_changes(lab, applied) == [("delete", "site/config.json")]
    assert lab.recorder.mutating() == [("s3", "DeleteObject")]

    keys = {o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert "site/config.json" not in keys
    assert "notifications/x.json" in keys
    assert client.get_object(Bucket=BUCKET, Key="notifications/x.json")["Body"].read() == (
        b'{"n": 1}'
    )
    assert lab.changes(lab.run("apply", ["s3"]), "s3") == []
    assert "notifications/x.json" in {
        o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]
    }


def test_s3_destroy_empties_a_versioned_bucket(lab, monkeypatch):
    # Small pages and batches, so that several list rounds and DeleteObjects batches run.
    monkeypatch.setattr(data, "LIST_PAGE_SIZE", 5)
    monkeypatch.setattr(data, "DELETE_BATCH", 2)
    lab.run("apply", ["s3"])
    client = s3()
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    for i in range(3):
        client.put_object(Bucket=BUCKET, Key="notifications/a.json", Body=f"{i}".encode())
    client.put_object(Bucket=BUCKET, Key="site/index.html", Body=b"overwritten")
    client.delete_object(Bucket=BUCKET, Key="notifications/a.json")
    client.delete_object(Bucket=BUCKET, Key="site/js/app.js")
    listed = client.list_object_versions(Bucket=BUCKET)
    assert len(listed["DeleteMarkers"]) == 2

    entries = len(listed["Versions"]) + len(listed["DeleteMarkers"])

    lab.recorder.calls.clear()
    removed = lab.run("destroy", ["s3"])
    assert [(c.action, c.kind, c.name) for c in lab.changes(removed, "s3")] == [
        ("delete", "bucket", BUCKET)
    ]
    # 9 versions (5 site files, 3 writes of a.json, 1 overwrite) and 2 delete markers:
    # pages of 5, 5 and 1 (then an empty one), deleted in batches of 2, 2, 1, 2, 2, 1, 1.
    assert entries == 11
    assert lab.recorder.calls.count(("s3", "ListObjectVersions")) == 4
    assert lab.recorder.calls.count(("s3", "DeleteObjects")) == 7
    assert client.list_buckets()["Buckets"] == []
    assert lab.run("destroy", ["s3"]).results["s3"].status is Status.NOCHANGE


def test_s3_lost_state_adopts_the_same_bucket(lab):
    lab.run("apply", ["s3"])
    lab.state.delete()
    plan = lab.run("plan", ["s3"])
    assert lab.changes(plan, "s3") == []
    assert plan.results["s3"].outputs["bucket"] == BUCKET
    lab.run("apply", ["s3"])
    assert [b["Name"] for b in s3().list_buckets()["Buckets"]] == [BUCKET]
    assert lab.state.outputs("s3")["bucket"] == BUCKET


def test_s3_adopts_a_bucket_found_by_its_tags(lab):
    client = s3()
    name = "microservices-static-handmade"
    client.create_bucket(Bucket=name)
    client.put_bucket_tagging(
        Bucket=name,
        Tagging={
            "TagSet": [
                {"Key": "msctl:lab", "Value": "microservices"},
                {"Key": "msctl:name", "Value": "microservices-static"},
            ]
        },
    )
    plan = lab.run("plan", ["s3"])
    assert ("bucket", name) in {(c.kind, c.name) for c in lab.changes(plan, "s3")}
    assert not [c for c in lab.changes(plan, "s3") if c.kind == "bucket" and c.action != "update"]
    lab.run("apply", ["s3"])
    assert lab.state.outputs("s3")["bucket"] == name
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == [name]
    tags = {t["Key"]: t["Value"] for t in client.get_bucket_tagging(Bucket=name)["TagSet"]}
    assert tags["msctl:step"] == "s3"

    # A second bucket with the same tags is an error, not a guess.
    client.create_bucket(Bucket="microservices-static-another")
    client.put_bucket_tagging(
        Bucket="microservices-static-another",
        Tagging={"TagSet": [{"Key": k, "Value": v} for k, v in tags.items()]},
    )
    failed = lab.run("plan", ["s3"], expect_ok=False).results["s3"]
    assert failed.status is Status.FAILED
    assert "found 2 buckets" in failed.error


def test_s3_outside_us_east_1_uses_a_location_constraint(aws, lab_config, site, tmp_path):
    lab = Lab(with_site(lab_config, site, region="eu-west-1"), tmp_path / "state")
    outputs = lab.run("apply", ["s3"]).results["s3"].outputs
    name = outputs["bucket"]
    suffix = hashlib.sha256(b"123456789012/eu-west-1/microservices").hexdigest()[:8]
    assert name == f"microservices-static-{suffix}"
    assert outputs["bucket_regional_domain"] == f"{name}.s3.eu-west-1.amazonaws.com"
    client = boto3.client("s3", region_name="eu-west-1")
    assert client.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-west-1"
    assert lab.changes(lab.run("plan", ["s3"]), "s3") == []
    lab.run("destroy", ["s3"])
    assert client.list_buckets()["Buckets"] == []


def test_s3_missing_site_directory_fails_before_any_change(aws, lab_config, tmp_path):
    lab = Lab(with_site(lab_config, tmp_path / "nowhere"), tmp_path / "state")
    failed = lab.run("apply", ["s3"], expect_ok=False).results["s3"]
    assert failed.status is Status.FAILED
    assert "does not exist" in failed.error
    assert s3().list_buckets()["Buckets"] == []
