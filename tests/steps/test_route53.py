"""route53 against moto: off without a domain; the zone (its own or an existing one), the
certificate and its validation records. The distribution's name and alias records are the
cloudfront step's (test_cloudfront)."""

from __future__ import annotations

import boto3
import pytest

from msctl.config import load_config
from msctl.engine import runner
from msctl.engine.model import Status
from msctl.resources.edge import CREATED
from msctl.steps.route53 import Route53Step, caller_reference

from .conftest import ROOT, Lab, assert_lifecycle

REGION = "us-east-1"
DOMAIN = "example.com"
FQDN = "api.example.com"


@pytest.fixture
def fast_acm(monkeypatch):
    # moto issues a DNS-validated certificate once it is older than this (default 60 s).
    monkeypatch.setattr("moto.settings.ACM_VALIDATION_WAIT", 0)


def domain_lab(tmp_path) -> Lab:
    config = load_config(ROOT / "config" / "lab.yaml", [f"route53.domain={DOMAIN}"])
    lab = Lab(config, tmp_path / "state")
    lab.steps.setdefault("route53", Route53Step())
    return lab


@pytest.fixture
def dns_lab(aws, fast_acm, tmp_path):
    return domain_lab(tmp_path)


def r53():
    return boto3.client("route53", region_name=REGION)


def acm():
    return boto3.client("acm", region_name="us-east-1")


def zones() -> list[dict]:
    return [z for z in r53().list_hosted_zones()["HostedZones"] if z["Name"] == f"{DOMAIN}."]


def records(zone_id: str) -> dict[tuple[str, str], dict]:
    sets = r53().list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return {(r["Name"].rstrip("."), r["Type"]): r for r in sets}


def certificates() -> list[dict]:
    return acm().list_certificates()["CertificateSummaryList"]


def existing_zone() -> str:
    """A zone someone else made, with a record of theirs."""
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
    return zone_id


def test_disabled_without_a_domain_makes_no_aws_call(lab):
    assert lab.config.route53.domain is None
    lab.steps.setdefault("route53", Route53Step())
    for action in ("plan", "apply", "destroy"):
        lab.recorder.calls.clear()
        result = runner.run(lab.ctx, lab.steps, action, selected=["route53"])
        res = result.results["route53"]
        assert (res.status, res.reason) == (Status.NOCHANGE, "disabled by config")
        assert res.changes == []
        assert lab.recorder.calls == []


def test_route53_lifecycle_creates_and_deletes_its_own_zone(dns_lab):
    assert Route53Step.requires == ()
    outputs = assert_lifecycle(dns_lab, "route53", {("hosted-zone", DOMAIN), ("certificate", FQDN)})
    assert outputs["fqdn"] == FQDN
    assert outputs["zone_created"] is True
    assert outputs["certificate_arn"].startswith("arn:aws:acm:us-east-1:")
    # destroy removed everything it made: the validation record, the certificate, the zone.
    assert zones() == []
    assert certificates() == []


def test_certificate_validated_in_an_existing_zone_that_is_left_as_it_was(dns_lab):
    zone_id = existing_zone()
    result = dns_lab.run("apply", ["route53"])
    out = result.results["route53"].outputs
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
    assert (tags["msctl:lab"], tags["msctl:step"]) == (dns_lab.config.lab, "route53")
    rr = cert["DomainValidationOptions"][0]["ResourceRecord"]
    validation = records(zone_id)[(rr["Name"].rstrip("."), "CNAME")]
    assert validation["ResourceRecords"] == [{"Value": rr["Value"]}]

    checks = dns_lab.run("verify", ["route53"]).results["route53"].checks
    assert [c.detail for c in checks if c.name == f"certificate {FQDN} issued"] == ["ISSUED"]
    assert all(c.ok for c in checks)

    # destroy leaves the zone msctl didn't create, with only what was there before
    destroyed = dns_lab.run("destroy", ["route53"])
    assert {(c.action, c.kind) for c in dns_lab.changes(destroyed, "route53")} == {
        ("delete", "dns-record"),
        ("delete", "certificate"),
    }
    assert [z["Id"].split("/")[-1] for z in zones()] == [zone_id]
    assert set(records(zone_id)) == {(DOMAIN, "NS"), (DOMAIN, "SOA"), (f"www.{DOMAIN}", "TXT")}
    assert certificates() == []


def test_down_without_state_finds_the_zone_and_the_certificate(dns_lab, tmp_path):
    dns_lab.run("apply", ["route53"])
    fresh = domain_lab(tmp_path / "elsewhere")  # no state file
    fresh.run("destroy", ["route53"])
    assert zones() == []
    assert certificates() == []


def test_a_zone_msctl_created_but_never_tagged_is_still_its_own(dns_lab):
    """An apply interrupted between CreateHostedZone and the tag: the CallerReference tells."""
    ref = caller_reference(dns_lab.config.lab, DOMAIN)
    r53().create_hosted_zone(Name=DOMAIN, CallerReference=ref)
    plan = dns_lab.run("plan", ["route53"])
    zone_changes = [c for c in dns_lab.changes(plan, "route53") if c.kind == "hosted-zone"]
    assert [(c.action, c.name) for c in zone_changes] == [("update", DOMAIN)]
    out = dns_lab.run("apply", ["route53"]).results["route53"].outputs
    assert out["zone_created"] is True
    dns_lab.run("destroy", ["route53"])
    assert zones() == []
