"""route53 against moto: off without a domain; zone, certificate, distribution and aliases."""

from __future__ import annotations

import boto3
import pytest

from msctl.config import load_config
from msctl.engine import runner
from msctl.engine.model import Pending, Status
from msctl.engine.step import Step, StepRun
from msctl.steps.route53 import CLOUDFRONT_ZONE_ID, CREATED, Route53Step, caller_reference

from .conftest import ROOT, Lab, assert_lifecycle

REGION = "us-east-1"
DOMAIN = "example.com"
FQDN = "api.example.com"


# ---------------------------------------------------------------- harness


def _create_distribution(lab_name: str) -> dict:
    """A distribution like the cloudfront step's (docs/steps.md outputs), tagged for the lab."""
    cf = boto3.client("cloudfront", region_name=REGION)
    dist = cf.create_distribution_with_tags(
        DistributionConfigWithTags={
            "DistributionConfig": {
                "CallerReference": f"msctl-{lab_name}-edge",
                "Comment": "microservices lab",
                "Enabled": True,
                "Origins": {
                    "Quantity": 1,
                    "Items": [
                        {
                            "Id": "api",
                            "DomainName": "abc123.execute-api.us-east-1.amazonaws.com",
                            "OriginPath": "/prod",
                            "CustomOriginConfig": {
                                "HTTPPort": 80,
                                "HTTPSPort": 443,
                                "OriginProtocolPolicy": "https-only",
                            },
                        }
                    ],
                },
                "DefaultCacheBehavior": {
                    "TargetOriginId": "api",
                    "ViewerProtocolPolicy": "redirect-to-https",
                    "CachePolicyId": "4135ea2d-6df8-44a3-9df3-4b5a84be39ad",
                },
            },
            "Tags": {"Items": [{"Key": "msctl:lab", "Value": lab_name}]},
        }
    )["Distribution"]
    return {"distribution_id": dist["Id"], "domain_name": dist["DomainName"], "arn": dist["ARN"]}


def _fake_cloudfront(lab_name: str) -> Step:
    """Stands in for the cloudfront step (a tagged distribution): Pending until applied."""

    class FakeCloudFront(Step):
        name = "cloudfront"
        outputs: dict | None = None

        def reconcile(self, run: StepRun) -> dict:
            if self.outputs is None:
                if run.dry_run:
                    return {
                        k: Pending(f"cloudfront {k}")
                        for k in ("distribution_id", "domain_name", "arn")
                    }
                self.outputs = _create_distribution(lab_name)
            return self.outputs

        def teardown(self, run: StepRun) -> None:
            pass

    return FakeCloudFront()


def _frozen(step_name: str, outputs: dict) -> Step:
    """A step already applied: later runs see its outputs without reconciling it again."""

    class Frozen(Step):
        name = step_name

        def reconcile(self, run: StepRun) -> dict:
            return outputs

        def teardown(self, run: StepRun) -> None:
            pass

    return Frozen()


def apply_dependencies(lab: Lab, step: str) -> None:
    """Apply everything `step` requires, with the registered steps, once. Their results
    don't change in these tests, so every later run of `step` reuses their outputs instead
    of reconciling the whole chain again (seconds per run against moto)."""
    deps = [s for s in runner.select(lab.steps, [step], "apply") if s != step]
    lab.run("apply", deps)
    for name in deps:
        lab.steps[name] = _frozen(name, lab.state.outputs(name))


def install_steps(lab: Lab, real: bool) -> Lab:
    """real: the registered cloudfront step and its whole chain (vpc ... apigw), applied
    once. Otherwise a stand-in distribution, for tests of route53's own behaviour."""
    if not real or "cloudfront" not in lab.steps:
        lab.steps["cloudfront"] = _fake_cloudfront(lab.config.lab)
    lab.steps.setdefault("route53", Route53Step())
    if real:
        apply_dependencies(lab, "route53")
    return lab


@pytest.fixture
def fast_acm(monkeypatch):
    # moto issues a DNS-validated certificate once it is older than this (default 60 s).
    monkeypatch.setattr("moto.settings.ACM_VALIDATION_WAIT", 0)


def _dns_lab(tmp_path, real: bool) -> Lab:
    config = load_config(ROOT / "config" / "lab.yaml", [f"route53.domain={DOMAIN}"])
    return install_steps(Lab(config, tmp_path / "state"), real)


@pytest.fixture
def dns_lab(aws, fast_acm, tmp_path):
    """route53 on the real cloudfront step (and what it requires) when registered."""
    return _dns_lab(tmp_path, real=True)


@pytest.fixture
def quick_dns_lab(aws, fast_acm, tmp_path):
    """route53 on a stand-in distribution, for behaviour that doesn't depend on the chain."""
    return _dns_lab(tmp_path, real=False)


def r53():
    return boto3.client("route53", region_name=REGION)


def acm():
    return boto3.client("acm", region_name="us-east-1")


def cloudfront():
    return boto3.client("cloudfront", region_name=REGION)


def zones() -> list[dict]:
    return [z for z in r53().list_hosted_zones()["HostedZones"] if z["Name"] == f"{DOMAIN}."]


def records(zone_id: str) -> dict[tuple[str, str], dict]:
    sets = r53().list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return {(r["Name"].rstrip("."), r["Type"]): r for r in sets}


def certificates() -> list[dict]:
    return acm().list_certificates()["CertificateSummaryList"]


def distribution_config(dist_id: str) -> dict:
    return cloudfront().get_distribution_config(Id=dist_id)["DistributionConfig"]


def assert_distribution_released(dist_id: str) -> None:
    config = distribution_config(dist_id)
    assert not config["Aliases"].get("Items")
    viewer = config["ViewerCertificate"]
    assert viewer["CloudFrontDefaultCertificate"] is True
    assert not viewer.get("ACMCertificateArn")


# ---------------------------------------------------------------- tests


def test_disabled_without_a_domain_makes_no_aws_call(lab):
    assert lab.config.route53.domain is None
    install_steps(lab, real=False)
    for action in ("plan", "apply", "destroy"):
        lab.recorder.calls.clear()
        result = runner.run(lab.ctx, lab.steps, action, selected=["route53"])
        res = result.results["route53"]
        assert (res.status, res.reason) == (Status.NOCHANGE, "disabled by config")
        assert res.changes == []
        assert lab.recorder.calls == []


def test_route53_lifecycle_creates_and_deletes_its_own_zone(dns_lab):
    outputs = assert_lifecycle(
        dns_lab,
        "route53",
        {
            ("hosted-zone", DOMAIN),
            ("certificate", FQDN),
            ("dns-record", f"{FQDN} A"),
            ("dns-record", f"{FQDN} AAAA"),
            ("distribution-alias", FQDN),
        },
    )
    assert outputs["fqdn"] == FQDN
    assert outputs["zone_created"] is True
    assert outputs["certificate_arn"].startswith("arn:aws:acm:us-east-1:")
    # destroy removed everything it made: the zone msctl created, the certificate, the alias.
    assert zones() == []
    assert certificates() == []
    assert_distribution_released(dns_lab.state.outputs("cloudfront")["distribution_id"])


def test_alias_and_certificate_wire_the_distribution_in_an_existing_zone(dns_lab):
    zone_id = (
        r53()
        .create_hosted_zone(Name=DOMAIN, CallerReference="someone-else")["HostedZone"]["Id"]
        .split("/")[-1]
    )
    mine = {
        "Name": f"www.{DOMAIN}.",
        "Type": "TXT",
        "TTL": 60,
        "ResourceRecords": [{"Value": '"x"'}],
    }
    r53().change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": mine}]},
    )

    result = dns_lab.run("apply", ["route53"])
    out = result.results["route53"].outputs
    edge = dns_lab.state.outputs("cloudfront")
    assert out["zone_id"] == zone_id and out["zone_created"] is False
    assert CREATED not in {
        t["Key"]
        for t in r53()
        .list_tags_for_resource(ResourceType="hostedzone", ResourceId=zone_id)["ResourceTagSet"]
        .get("Tags", [])
    }

    # the certificate: requested in us-east-1 for api.example.com, DNS-validated, issued
    (summary,) = certificates()
    assert summary["CertificateArn"] == out["certificate_arn"]
    cert = acm().describe_certificate(CertificateArn=out["certificate_arn"])["Certificate"]
    assert cert["DomainName"] == FQDN and cert["Status"] == "ISSUED"
    assert ":acm:us-east-1:" in cert["CertificateArn"]
    tags = {
        t["Key"]: t["Value"]
        for t in acm().list_tags_for_certificate(CertificateArn=cert["CertificateArn"])["Tags"]
    }
    assert tags["msctl:lab"] == dns_lab.config.lab
    rr = cert["DomainValidationOptions"][0]["ResourceRecord"]
    have = records(zone_id)
    validation = have[(rr["Name"].rstrip("."), "CNAME")]
    assert validation["ResourceRecords"] == [{"Value": rr["Value"]}]

    checks = dns_lab.run("verify", ["route53"]).results["route53"].checks
    assert [c.detail for c in checks if c.name == f"certificate {FQDN} issued"] == ["ISSUED"]

    # the distribution answers for the name with that certificate
    config = distribution_config(edge["distribution_id"])
    assert config["Aliases"]["Items"] == [FQDN]
    viewer = config["ViewerCertificate"]
    assert viewer["ACMCertificateArn"] == cert["CertificateArn"]
    assert viewer["SSLSupportMethod"] == "sni-only"
    assert viewer["MinimumProtocolVersion"] == "TLSv1.2_2021"
    assert viewer["CloudFrontDefaultCertificate"] is False

    # alias A and AAAA at the distribution
    for rtype in ("A", "AAAA"):
        target = have[(FQDN, rtype)]["AliasTarget"]
        assert target["HostedZoneId"] == CLOUDFRONT_ZONE_ID
        assert target["DNSName"].rstrip(".") == edge["domain_name"]
        assert target["EvaluateTargetHealth"] is False

    # drift: someone takes the alias off the distribution; plan sees it, apply restores it
    drifted = cloudfront().get_distribution_config(Id=edge["distribution_id"])
    bare = {**drifted["DistributionConfig"], "Aliases": {"Quantity": 0}}
    bare["ViewerCertificate"] = {"CloudFrontDefaultCertificate": True}
    cloudfront().update_distribution(
        Id=edge["distribution_id"], IfMatch=drifted["ETag"], DistributionConfig=bare
    )
    plan = dns_lab.run("plan", ["route53"])
    assert [(c.action, c.kind, c.name) for c in dns_lab.changes(plan, "route53")] == [
        ("create", "distribution-alias", FQDN)
    ]
    dns_lab.run("apply", ["route53"])
    assert distribution_config(edge["distribution_id"])["Aliases"]["Items"] == [FQDN]

    # destroy leaves the zone msctl didn't create, with only what was there before
    dns_lab.run("destroy", ["route53"])
    assert [z["Id"].split("/")[-1] for z in zones()] == [zone_id]
    assert set(records(zone_id)) == {(DOMAIN, "NS"), (DOMAIN, "SOA"), (f"www.{DOMAIN}", "TXT")}
    assert certificates() == []
    assert_distribution_released(edge["distribution_id"])


def test_refuses_to_overwrite_a_record_that_is_not_a_cloudfront_alias(quick_dns_lab):
    dns_lab = quick_dns_lab
    zone_id = r53().create_hosted_zone(Name=DOMAIN, CallerReference="someone-else")["HostedZone"][
        "Id"
    ]
    theirs = {
        "Name": f"{FQDN}.",
        "Type": "A",
        "TTL": 60,
        "ResourceRecords": [{"Value": "192.0.2.1"}],
    }
    r53().change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": theirs}]},
    )
    result = dns_lab.run("apply", ["route53"], expect_ok=False)
    res = result.results["route53"]
    assert res.status is Status.FAILED and "isn't a CloudFront alias" in res.error
    a = records(zone_id.split("/")[-1])[(FQDN, "A")]
    assert a["ResourceRecords"] == [{"Value": "192.0.2.1"}]


def test_a_zone_msctl_created_but_never_tagged_is_still_its_own(quick_dns_lab):
    """An apply interrupted between CreateHostedZone and the tag: the CallerReference tells."""
    dns_lab = quick_dns_lab
    ref = caller_reference(dns_lab.config.lab, DOMAIN)
    r53().create_hosted_zone(Name=DOMAIN, CallerReference=ref)
    plan = dns_lab.run("plan", ["route53"])
    zone_changes = [c for c in dns_lab.changes(plan, "route53") if c.kind == "hosted-zone"]
    assert [(c.action, c.name) for c in zone_changes] == [("update", DOMAIN)]
    out = dns_lab.run("apply", ["route53"]).results["route53"].outputs
    assert out["zone_created"] is True
    dns_lab.run("destroy", ["route53"])
    assert zones() == []
