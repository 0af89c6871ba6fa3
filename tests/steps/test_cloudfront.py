"""cloudfront against moto: origins, behaviours, OAC, the bucket policy, drift, and a destroy
that disables before it deletes and leaves other bucket-policy statements alone; with a
domain, the name and the certificate on the distribution and the alias records."""

from __future__ import annotations

import hashlib
import json
import re

import boto3
import pytest

from msctl.config import load_config
from msctl.engine.model import Status
from msctl.steps.cloudfront import CLOUDFRONT_ZONE_ID, CloudFrontStep, managed_view

from .conftest import ROOT, Lab, assert_lifecycle
from .test_apigw import REGION, install_stubs
from .test_route53 import DOMAIN, FQDN, certificates, existing_zone, records, zones

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


@pytest.fixture
def domain_lab(aws, tmp_path, monkeypatch):
    """edge_lab with route53.domain set (route53 is then on: the real step)."""
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "false")
    # moto issues a DNS-validated certificate once it is older than this (default 60 s).
    monkeypatch.setattr("moto.settings.ACM_VALIDATION_WAIT", 0)
    config = load_config(ROOT / "config" / "lab.yaml", [f"route53.domain={DOMAIN}"])
    lab = Lab(config, tmp_path / "state")
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

    assert re.fullmatch(r"msctl-microservices-[0-9a-f]{32}", config["CallerReference"])
    # without a domain: no name, CloudFront's own certificate
    assert not config["Aliases"].get("Items")
    assert config["ViewerCertificate"]["CloudFrontDefaultCertificate"] is True
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
        "Description": "CloudFront reads the static bucket - "
        "msctl:lab=microservices msctl:step=cloudfront",
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
    # Disabled, waited until the disable deployed, deleted (the reads before the disable are
    # the inventory's lookup).
    seq = calls(lab, "UpdateDistribution", "GetDistribution", "DeleteDistribution")
    after_disable = seq[seq.index("UpdateDistribution") :]
    assert "GetDistribution" in after_disable and after_disable[-1] == "DeleteDistribution"
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


def distribution_config(dist_id: str) -> dict:
    return cloudfront().get_distribution_config(Id=dist_id)["DistributionConfig"]


def test_a_domain_is_on_the_distribution_from_its_create_with_alias_records(domain_lab):
    lab = domain_lab
    zone_id = existing_zone()
    lab.run("apply", ["route53", "apigw", "s3"])
    lab.recorder.calls.clear()
    outputs = lab.run("apply", ["cloudfront"]).results["cloudfront"].outputs
    dns = lab.state.outputs("route53")
    dist_id = outputs["distribution_id"]

    # created with the name and the certificate: no second update
    assert calls(lab, "CreateDistributionWithTags", "UpdateDistribution") == [
        "CreateDistributionWithTags"
    ]
    config = distribution_config(dist_id)
    assert config["Aliases"]["Items"] == [FQDN]
    viewer = config["ViewerCertificate"]
    assert viewer["ACMCertificateArn"] == dns["certificate_arn"]
    assert viewer["SSLSupportMethod"] == "sni-only"
    assert viewer["MinimumProtocolVersion"] == "TLSv1.2_2021"
    assert viewer["CloudFrontDefaultCertificate"] is False

    # alias A and AAAA at the distribution, in the zone that was already there
    have = records(zone_id)
    for rtype in ("A", "AAAA"):
        target = have[(FQDN, rtype)]["AliasTarget"]
        assert target["HostedZoneId"] == CLOUDFRONT_ZONE_ID
        assert target["DNSName"].rstrip(".") == outputs["domain_name"]
        assert target["EvaluateTargetHealth"] is False
    assert lab.changes(lab.run("plan", ["cloudfront"]), "cloudfront") == []
    checks = lab.run("verify", ["cloudfront"]).results["cloudfront"].checks
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok]
    lab.recorder.calls.clear()
    lab.run("apply", ["cloudfront"])
    assert lab.recorder.mutating() == []

    # drift: someone takes the name off the distribution; plan sees it, apply restores it
    drifted = cloudfront().get_distribution_config(Id=dist_id)
    bare = {**drifted["DistributionConfig"], "Aliases": {"Quantity": 0}}
    bare["ViewerCertificate"] = {"CloudFrontDefaultCertificate": True}
    cloudfront().update_distribution(Id=dist_id, IfMatch=drifted["ETag"], DistributionConfig=bare)
    plan = lab.run("plan", ["cloudfront"])
    assert [(c.action, c.kind, c.detail) for c in lab.changes(plan, "cloudfront")] == [
        ("update", "distribution", "Aliases, ViewerCertificate differ")
    ]
    lab.run("apply", ["cloudfront"])
    config = distribution_config(dist_id)
    assert config["Aliases"]["Items"] == [FQDN]
    assert config["ViewerCertificate"]["ACMCertificateArn"] == dns["certificate_arn"]

    # down: the records and the distribution go with cloudfront, the certificate with route53;
    # the zone msctl didn't create stays with only what was there before
    destroyed = lab.run("destroy", ["route53"])
    assert destroyed.results["cloudfront"].status is Status.COMPLETE
    assert not cloudfront().list_distributions()["DistributionList"].get("Items")
    assert certificates() == []
    assert [z["Id"].split("/")[-1] for z in zones()] == [zone_id]
    assert set(records(zone_id)) == {(DOMAIN, "NS"), (DOMAIN, "SOA"), (f"www.{DOMAIN}", "TXT")}


def test_down_and_up_again_with_a_zone_msctl_created(domain_lab):
    """up -> down -> up: each create sends a CallerReference of its own (AWS refuses one it
    has seen, even from a deleted distribution); the zone msctl created goes with down."""
    lab = domain_lab
    sent: list[str] = []
    lab.ctx.session.events.register(
        "provide-client-params.cloudfront.CreateDistributionWithTags",
        lambda params, **_: sent.append(
            params["DistributionConfigWithTags"]["DistributionConfig"]["CallerReference"]
        ),
    )
    plan = lab.run("plan", ["cloudfront"])
    planned = {(c.kind, c.action) for r in plan.results.values() for c in r.changes}
    assert {("hosted-zone", "create"), ("certificate", "create")} <= planned
    assert ("distribution", "create") in planned
    first = lab.run("apply", ["cloudfront"]).results["cloudfront"].outputs
    assert lab.state.outputs("route53")["zone_created"] is True
    lab.run("destroy", ["route53"])
    assert zones() == [] and certificates() == []
    assert not cloudfront().list_distributions()["DistributionList"].get("Items")

    second = lab.run("apply", ["cloudfront"]).results["cloudfront"].outputs
    assert second["distribution_id"] != first["distribution_id"]
    assert len(sent) == 2 and sent[0] != sent[1]
    assert distribution_config(second["distribution_id"])["CallerReference"] == sent[1]
    assert distribution_config(second["distribution_id"])["Aliases"]["Items"] == [FQDN]
    lab.run("destroy", ["route53"])
    assert zones() == [] and certificates() == []


def test_refuses_to_overwrite_a_record_that_is_not_a_cloudfront_alias(domain_lab):
    lab = domain_lab
    zone_id = existing_zone()
    theirs = {
        "Name": f"{FQDN}.",
        "Type": "A",
        "TTL": 60,
        "ResourceRecords": [{"Value": "192.0.2.1"}],
    }
    boto3.client("route53", region_name=REGION).change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": theirs}]},
    )
    result = lab.run("apply", ["cloudfront"], expect_ok=False)
    res = result.results["cloudfront"]
    assert res.status is Status.FAILED and "isn't a CloudFront alias" in res.error
    assert records(zone_id)[(FQDN, "A")]["ResourceRecords"] == [{"Value": "192.0.2.1"}]
    # down leaves it alone too
    lab.run("destroy", ["cloudfront"])
    assert records(zone_id)[(FQDN, "A")]["ResourceRecords"] == [{"Value": "192.0.2.1"}]


def test_bucket_policy_and_aliases_are_written_while_the_distribution_deploys(domain_lab):
    """Its ARN and domain name come with the create: the bucket policy and the alias records
    don't wait for Deployed; the step still ends only once the distribution is Deployed."""
    lab = domain_lab
    existing_zone()
    lab.run("apply", ["route53", "apigw", "s3"])
    lab.recorder.calls.clear()
    lab.run("apply", ["cloudfront"])
    ops = [op for _, op in lab.recorder.calls]
    created = ops.index("CreateDistributionWithTags")
    first_poll = ops.index("GetDistribution", created)
    assert ops.index("PutBucketPolicy") < first_poll
    changes = [i for i, op in enumerate(ops) if op == "ChangeResourceRecordSets"]
    assert len(changes) == 2 and created < min(changes) and max(changes) < first_poll
    # The last thing the step does is to see it Deployed.
    assert ops[-1] == "GetDistribution"
    dist = cloudfront().list_distributions()["DistributionList"]["Items"][0]
    assert cloudfront().get_distribution(Id=dist["Id"])["Distribution"]["Status"] == "Deployed"
