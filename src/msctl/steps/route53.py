"""route53: the lab's domain (seed 6.2, optional): its hosted zone and the certificate the
cloudfront step serves it with.

On only when `route53.domain` is set. It uses the domain's public hosted zone when there is
one (never changed beyond the records msctl adds, never deleted), or creates it: only a zone
tagged msctl:created=true by this lab is ever deleted. It requests an ACM certificate for
`<record>.<domain>` in us-east-1 (certificate.py), puts its DNS validation records in the
zone and waits until it is issued. The cloudfront step then creates the distribution with
the name and the certificate, and points the alias records at it (the helpers for records
are here).

A zone msctl creates answers only once the domain's registrar delegates to its name servers;
until then ACM can't validate the certificate. The wait says so, with the name servers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from botocore.exceptions import ClientError

from ..aws.errors import is_code
from ..aws.tags import as_list
from ..engine.model import Check, is_pending
from ..engine.step import StepError
from ..resources import Resource, owner
from ..resources.edge import CERTIFICATE, CREATED, HOSTED_ZONE
from . import certificate
from .base import LabStep
from .run import StepRun

CHANGE_TIMEOUT = 300  # a Route 53 change reaches INSYNC in under a minute
CHANGE_EXPECTED = 30  # seconds, typically


class Route53Step(LabStep):
    name = "route53"
    requires = ()
    services = ("route53", "acm")
    description = "hosted zone and the ACM certificate for the lab's domain"
    kinds = (HOSTED_ZONE, CERTIFICATE)  # down: the certificate first, then the zone

    def enabled(self, ctx) -> bool:
        return bool(ctx.config.route53.domain)

    def reconcile(self, run: StepRun) -> dict:
        domain = run.config.route53.domain
        fqdn = record_name(run.config)
        zone_id, created = ensure_zone(run, domain)
        cert_arn = certificate.ensure_certificate(run, fqdn)
        if not is_pending(cert_arn):
            for record in certificate.validation_records(run, cert_arn):
                ensure_record(run, zone_id, record, f"certificate validation for {fqdn}")

            def hint() -> str:
                if not created:
                    return "run the same command again to keep waiting"
                zone = run.client(HOSTED_ZONE).get_hosted_zone(Id=zone_id)
                servers = ", ".join(zone.get("DelegationSet", {}).get("NameServers", []))
                return (
                    f"ACM validates through DNS: the registrar of {domain} must delegate it to "
                    f"{servers}; then run the same command again"
                )

            certificate.wait_issued(run, cert_arn, fqdn, hint)
        return {
            "zone_id": zone_id,
            "fqdn": fqdn,
            "certificate_arn": cert_arn,
            "zone_created": created,
        }

    def verify(self, run: StepRun) -> list[Check]:
        """The dry reconcile, plus the certificate's status: a certificate still waiting for
        DNS validation exists but doesn't serve yet."""
        checks = super().verify(run)
        arn = run.outputs.get("certificate_arn")
        if arn and not is_pending(arn):
            now = certificate.status(run, arn)
            checks.append(Check(f"certificate {run.outputs['fqdn']} issued", now == "ISSUED", now))
        return checks

    def teardown(self, run: StepRun) -> None:
        fqdn = record_name(run.config)
        r53 = run.client(HOSTED_ZONE)
        zone = HOSTED_ZONE.find(r53, run.config.route53.domain, run.ctx.lab)
        if zone is not None:
            for record in all_records(r53, zone["Id"]):
                if certificate.is_validation_record(record, fqdn):
                    remove_record(run, zone["Id"], record, "certificate validation")
        super().teardown(run)


def record_name(config) -> str:
    return f"{config.route53.record}.{config.route53.domain}"


def dns(name: str) -> str:
    """A DNS name compared the way Route 53 treats it: lower case, without the final dot."""
    return name.rstrip(".").lower()


# ---------------------------------------------------------------- the hosted zone


def caller_reference(lab: str, domain: str) -> str:
    """Deterministic, so that a zone whose tag never landed is still recognised as msctl's
    (at most 128 characters)."""
    ref = f"msctl-{lab}-{domain}"
    if len(ref) > 100:
        ref = f"msctl-{lab}-{hashlib.sha256(domain.encode()).hexdigest()[:24]}"
    return ref


def ensure_zone(run: StepRun, domain: str) -> tuple[str, bool]:
    """(zone id, whether msctl created it). A zone someone else made is used as it is."""
    r53 = run.client(HOSTED_ZONE)
    zone = HOSTED_ZONE.find(r53, domain, run.ctx.lab)
    if zone is not None and owner(HOSTED_ZONE.tags(r53, zone)) != run.ctx.lab:
        ours = zone.get("CallerReference", "").startswith(caller_reference(run.ctx.lab, domain))
        run.setting(
            HOSTED_ZONE.name,
            domain,
            # Created by msctl, interrupted before the tag: tag it, so that down removes it.
            ok=not ours,
            detail=f"tag {CREATED}=true (created by msctl, tag missing)" if ours else zone["Id"],
            apply=lambda: _tag_created(run, zone["Id"], domain),
        )
        return zone["Id"], ours
    return run.ensure(
        HOSTED_ZONE, domain, find=lambda: zone, create=lambda: _create(run, domain)
    ), True


def _create(run: StepRun, domain: str) -> Resource:
    r53 = run.client(HOSTED_ZONE)
    ref = caller_reference(run.ctx.lab, domain)
    config = {"Comment": f"msctl lab {run.ctx.lab}", "PrivateZone": False}
    try:
        created = r53.create_hosted_zone(Name=domain, CallerReference=ref, HostedZoneConfig=config)
    except ClientError as exc:
        if not is_code(exc, "HostedZoneAlreadyExists"):
            raise
        # The lookup found no zone, so the reference belongs to a zone deleted earlier (AWS
        # never accepts a CallerReference twice): a new zone, with a new reference.
        ref = f"{ref}-{int(time.time())}"
        created = r53.create_hosted_zone(Name=domain, CallerReference=ref, HostedZoneConfig=config)
    zone = {**created["HostedZone"], "Id": HOSTED_ZONE.ident(created["HostedZone"])}
    _tag_created(run, zone["Id"], domain)
    servers = created.get("DelegationSet", {}).get("NameServers", [])
    run.emit(
        "note",
        f"created hosted zone {domain}: delegate the domain to {', '.join(servers)} at its "
        "registrar, or the certificate can't be validated",
    )
    return zone


def _tag_created(run: StepRun, zone_id: str, domain: str) -> None:
    run.client(HOSTED_ZONE).change_tags_for_resource(
        ResourceType="hostedzone",
        ResourceId=zone_id,
        AddTags=as_list({**run.tags(domain), CREATED: "true"}),
    )


# ---------------------------------------------------------------- records (also cloudfront's)


def all_records(r53, zone_id: str) -> list[Resource]:
    paginator = r53.get_paginator("list_resource_record_sets")
    return [
        r for page in paginator.paginate(HostedZoneId=zone_id) for r in page["ResourceRecordSets"]
    ]


def find_record(r53, zone_id: str, name: str, rtype: str) -> Resource | None:
    """The record set of exactly this name and type (simple routing), as Route 53 has it."""
    page = r53.list_resource_record_sets(
        HostedZoneId=zone_id, StartRecordName=name, StartRecordType=rtype, MaxItems="1"
    )
    for record in page.get("ResourceRecordSets", []):
        if dns(record["Name"]) == dns(name) and record["Type"] == rtype:
            return record
    return None


def _view(record: Resource) -> tuple:
    """What a record set says, in a form where equal records compare equal."""
    target = record.get("AliasTarget")
    if target:
        return (
            target["HostedZoneId"],
            dns(target["DNSName"]),
            bool(target["EvaluateTargetHealth"]),
        )
    return (record.get("TTL"), sorted(v["Value"] for v in record.get("ResourceRecords", [])))


def change_records(run: StepRun, zone_id: str, action: str, records: list[Resource]) -> None:
    """One change batch; an UPSERT is waited for until INSYNC (what follows relies on the
    name resolving). A DELETE isn't: the zone's record list reflects it at once, which is
    all a zone or certificate delete looks at, so `down` doesn't pay for DNS propagation."""
    r53 = run.client(HOSTED_ZONE)
    changed = r53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={"Changes": [{"Action": action, "ResourceRecordSet": r} for r in records]},
    )
    change_id = changed["ChangeInfo"]["Id"]
    if action == "DELETE":
        return

    def insync() -> tuple[bool, str]:
        now = r53.get_change(Id=change_id)["ChangeInfo"]["Status"]
        return now == "INSYNC", now

    names = ", ".join(f"{r['Name']} {r['Type']}" for r in records)
    run.wait(
        f"Route 53 change to {names}", insync, timeout=CHANGE_TIMEOUT, expected=CHANGE_EXPECTED
    )


def _label(record: Resource) -> str:
    return f"{dns(record['Name'])} {record['Type']}"


def ensure_record(
    run: StepRun,
    zone_id: str,
    desired: Resource,
    detail: str,
    foreign: Callable[[Resource], str] = lambda _current: "",
    after: Iterable[Any] = (),
) -> None:
    """The record set as desired (UPSERT). A different record for which `foreign` says why it
    isn't msctl's is never overwritten. While the zone or a value in `after` is Pending, the
    record is part of that create."""
    if is_pending(zone_id, *after):
        return
    current = find_record(run.client(HOSTED_ZONE), zone_id, desired["Name"], desired["Type"])
    ok = current is not None and _view(current) == _view(desired)
    why = foreign(current) if current is not None and not ok else ""
    if why:
        raise StepError(
            f"{why}; msctl won't overwrite it",
            hint="delete that record, or choose another route53.record name",
        )
    run.setting(
        "dns-record",
        _label(desired),
        ok=ok,
        detail=detail,
        action="create" if current is None else "update",
        apply=lambda: change_records(run, zone_id, "UPSERT", [desired]),
    )


def remove_record(run: StepRun, zone_id: str, record: Resource, detail: str) -> None:
    """Delete a record set, sent back exactly as Route 53 has it."""
    exact = {k: record[k] for k in ("Name", "Type", "SetIdentifier", "Weight") if k in record}
    if record.get("AliasTarget"):  # an alias has no TTL
        exact["AliasTarget"] = record["AliasTarget"]
    else:
        exact.update(TTL=record.get("TTL"), ResourceRecords=record.get("ResourceRecords", []))
    run.setting(
        "dns-record",
        _label(record),
        ok=False,
        detail=detail,
        action="delete",
        apply=lambda: change_records(run, zone_id, "DELETE", [exact]),
    )
