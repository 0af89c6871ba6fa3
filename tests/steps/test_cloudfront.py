"""cloudfront against moto: origins, behaviours, OAC, the bucket policy, drift, and a destroy
that disables before it deletes and leaves other bucket-policy statements alone."""

from __future__ import annotations

import hashlib
import json

import boto3
import pytest

from msctl.steps.cloudfront import CloudFrontStep, managed_view

from .conftest import assert_lifecycle
from .test_apigw import REGION, install_stubs

ACCOUNT = "123456789012"
BUCKET = (
    "microservices-static-"
    + hashlib.sha256(f"{ACCOUNT}/{REGION}/microservices".encode()).hexdigest()[:8]
)
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
FOREIGN = {
    "Sid": "SomeoneElsesStatement",
    "Effect": "Allow",
    "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
    "Action": "s3:ListBucket",
    "Resource": f"arn:aws:s3:::{BUCKET}",
}


@pytest.fixture
def edge_lab(lab, monkeypatch):
    """The real s3 and apigw steps; lambda and alb stubbed (see test_apigw)."""
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "false")
    install_stubs(lab)
    lab.steps.setdefault("cloudfront", CloudFrontStep())
    return lab


def cloudfront():
    return boto3.client("cloudfront", region_name=REGION)


def statements(bucket: str = BUCKET) -> dict[str, dict]:
    s3 = boto3.client("s3", region_name=REGION)
    try:
        policy = json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except s3.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "NoSuchBucketPolicy"
        return {}
    return {s["Sid"]: s for s in policy["Statement"]}


def calls(lab, *operations: str) -> list[str]:
    return [op for service, op in lab.recorder.calls if op in operations]


def test_cloudfront_lifecycle(edge_lab):
    lab = edge_lab
    outputs = assert_lifecycle(
        lab,
        "cloudfront",
        {
            ("origin-access-control", "microservices-static-oac"),
            ("distribution", "microservices-distribution"),
            ("bucket-policy", f"{BUCKET} CloudFront read"),
        },
    )
    assert outputs["domain_name"].endswith(".cloudfront.net")
    assert (
        outputs["arn"] == f"arn:aws:cloudfront::{ACCOUNT}:distribution/{outputs['distribution_id']}"
    )
    # The destroy disabled the distribution, then deleted it; nothing of it is left.
    assert calls(lab, "UpdateDistribution", "DeleteDistribution") == [
        "UpdateDistribution",
        "DeleteDistribution",
    ]
    cf = cloudfront()
    assert not cf.list_distributions()["DistributionList"].get("Items")
    assert not cf.list_origin_access_controls()["OriginAccessControlList"].get("Items")
    assert statements() == {}


def test_distribution_as_the_seed_and_a_destroy_that_keeps_other_statements(edge_lab):
    lab = edge_lab
    lab.run("apply", ["s3"])
    s3 = boto3.client("s3", region_name=REGION)
    s3.put_bucket_policy(
        Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [FOREIGN]})
    )
    outputs = lab.run("apply", ["cloudfront"]).results["cloudfront"].outputs
    api = lab.state.outputs("apigw")
    cf = cloudfront()
    dist_id, arn = outputs["distribution_id"], outputs["arn"]
    config = cf.get_distribution_config(Id=dist_id)["DistributionConfig"]

    assert config["CallerReference"] == "msctl-microservices-distribution"
    assert (config["Enabled"], config["Comment"]) == (True, "microservices lab")
    assert config["DefaultRootObject"] == "index.html"
    assert config["PriceClass"] == "PriceClass_100"
    assert config["HttpVersion"] == "http2and3"
    origins = {o["Id"]: o for o in config["Origins"]["Items"]}
    assert set(origins) == {"api", "static"}
    assert (
        origins["api"]["DomainName"] == f"{api['rest_api_id']}.execute-api.us-east-1.amazonaws.com"
    )
    assert origins["api"]["OriginPath"] == "/prod"
    custom = origins["api"]["CustomOriginConfig"]
    assert custom["OriginProtocolPolicy"] == "https-only"
    assert custom["OriginSslProtocols"]["Items"] == ["TLSv1.2"]
    assert origins["static"]["DomainName"] == f"{BUCKET}.s3.us-east-1.amazonaws.com"
    assert origins["static"]["OriginPath"] == "/site"
    # (moto drops the S3 origin's OriginAccessControlId, so the OAC is checked by itself.)

    (api_behavior,) = config["CacheBehaviors"]["Items"]
    assert api_behavior["PathPattern"] == "/api/*"
    assert api_behavior["TargetOriginId"] == "api"
    assert api_behavior["ViewerProtocolPolicy"] == "redirect-to-https"
    assert sorted(api_behavior["AllowedMethods"]["Items"]) == sorted(
        ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"]
    )
    assert sorted(api_behavior["AllowedMethods"]["CachedMethods"]["Items"]) == ["GET", "HEAD"]
    assert api_behavior["CachePolicyId"] == CACHING_DISABLED
    assert api_behavior["OriginRequestPolicyId"] == ALL_VIEWER_EXCEPT_HOST
    default = config["DefaultCacheBehavior"]
    assert default["TargetOriginId"] == "static"
    assert default["ViewerProtocolPolicy"] == "redirect-to-https"
    assert sorted(default["AllowedMethods"]["Items"]) == ["GET", "HEAD"]
    assert default["CachePolicyId"] == CACHING_OPTIMIZED

    tags = {t["Key"]: t["Value"] for t in cf.list_tags_for_resource(Resource=arn)["Tags"]["Items"]}
    assert tags["msctl:lab"] == "microservices" and tags["msctl:step"] == "cloudfront"
    oac = cf.get_origin_access_control(Id=outputs["oac_id"])["OriginAccessControl"]
    assert oac["OriginAccessControlConfig"] == {
        "Name": "microservices-static-oac",
        "Description": "msctl microservices: CloudFront reads the static bucket",
        "SigningProtocol": "sigv4",
        "SigningBehavior": "always",
        "OriginAccessControlOriginType": "s3",
    }

    # The bucket: only its site/ prefix, and only by this distribution (so never the
    # notifications); the statement someone else put there is kept.
    policy = statements()
    assert set(policy) == {"SomeoneElsesStatement", "msctl-cloudfront-oac-read"}
    read = policy["msctl-cloudfront-oac-read"]
    assert read["Effect"] == "Allow"
    assert read["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert read["Action"] == "s3:GetObject"
    assert read["Resource"] == f"arn:aws:s3:::{BUCKET}/site/*"
    assert read["Condition"] == {"StringEquals": {"AWS:SourceArn": arn}}

    # Drift: a price class changed by hand is put back with one update; other fields stay.
    live = cf.get_distribution_config(Id=dist_id)
    cf.update_distribution(
        Id=dist_id,
        IfMatch=live["ETag"],
        DistributionConfig={**live["DistributionConfig"], "PriceClass": "PriceClass_All"},
    )
    plan = lab.run("plan", ["cloudfront"])
    assert [(c.action, c.kind, c.detail) for c in lab.changes(plan, "cloudfront")] == [
        ("update", "distribution", "PriceClass differ")
    ]
    lab.recorder.calls.clear()
    lab.run("apply", ["cloudfront"])
    assert calls(lab, "UpdateDistribution", "CreateDistributionWithTags") == ["UpdateDistribution"]
    assert cf.get_distribution_config(Id=dist_id)["DistributionConfig"]["PriceClass"] == (
        "PriceClass_100"
    )
    assert lab.changes(lab.run("plan", ["cloudfront"]), "cloudfront") == []

    lab.recorder.calls.clear()
    lab.run("destroy", ["cloudfront"])
    assert calls(lab, "UpdateDistribution", "GetDistribution", "DeleteDistribution")[0] == (
        "UpdateDistribution"
    )
    assert calls(lab, "UpdateDistribution", "DeleteDistribution") == [
        "UpdateDistribution",
        "DeleteDistribution",
    ]
    assert not cf.list_distributions()["DistributionList"].get("Items")
    assert not cf.list_origin_access_controls()["OriginAccessControlList"].get("Items")
    assert statements() == {"SomeoneElsesStatement": FOREIGN}


def test_the_comparison_enforces_the_oac_on_aws_and_ignores_what_moto_drops():
    desired = {
        "Comment": "c",
        "Enabled": True,
        "Origins": {
            "Quantity": 1,
            "Items": [
                {
                    "Id": "static",
                    "DomainName": "b.s3.us-east-1.amazonaws.com",
                    "OriginPath": "",
                    "S3OriginConfig": {"OriginAccessIdentity": ""},
                    "OriginAccessControlId": "E2OAC",
                }
            ],
        },
        "DefaultCacheBehavior": {"TargetOriginId": "static", "Compress": True},
    }
    # What AWS reports: the same, plus defaults msctl doesn't manage.
    aws = json.loads(json.dumps(desired))
    aws["Origins"]["Items"][0].update(ConnectionAttempts=3, OriginShield={"Enabled": False})
    aws["Logging"] = {"Enabled": False}
    assert managed_view(aws, local=False) == managed_view(desired, local=False)
    # An origin that lost its OAC (or the S3 origin config) differs on AWS...
    lost = json.loads(json.dumps(aws))
    del lost["Origins"]["Items"][0]["OriginAccessControlId"]
    del lost["Origins"]["Items"][0]["S3OriginConfig"]
    assert managed_view(lost, local=False) != managed_view(desired, local=False)
    # ...but that is exactly what the local emulator stores, so there it is ignored.
    assert managed_view(lost, local=True) == managed_view(desired, local=True)
