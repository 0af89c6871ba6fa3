"""route53: the lab's domain in front of CloudFront (seed 6.2, optional).

On only when `route53.domain` is set. It uses the domain's public hosted zone when there is
one, or creates it (and then removes it on destroy: only a zone tagged msctl:created=true by
this lab is ever deleted; the state file is a cache, the tag is the truth). It requests an
ACM certificate for `<record>.<domain>` in us-east-1 (CloudFront only takes certificates from
there), validates it by DNS in the zone, puts the name and the certificate on the
distribution, and points alias A and AAAA records at it.

A zone msctl creates answers only once the domain's registrar delegates to its name servers;
until then ACM can't validate the certificate. The wait says so, with the name servers.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from botocore.exceptions import ClientError

from ..aws.errors import is_code
from ..aws.tags import LAB, as_dict, as_list
from ..aws.waiters import WaitTimeout
from ..engine.model import Check, is_pending
from ..engine.step import Fix, Resource, Step, StepError, StepRun, only_one

CERT_REGION = "us-east-1"  # CloudFront takes ACM certificates from us-east-1 only
CLOUDFRONT_ZONE_ID = "Z2FDTNDATAQYW2"  # the fixed hosted zone id of every CloudFront alias
CREATED = "msctl:created"
SSL_SUPPORT = "sni-only"
MIN_TLS = "TLSv1.2_2021"
VALIDATION_TTL = 300
ALL_CERT_STATUSES = [
    "PENDING_VALIDATION",
    "ISSUED",
    "INACTIVE",
    "EXPIRED",
    "VALIDATION_TIMED_OUT",
    "REVOKED",
    "FAILED",
]
DEAD_CERT_STATUSES = {"INACTIVE", "EXPIRED", "VALIDATION_TIMED_OUT", "REVOKED", "FAILED"}
# Route 53 changes reach INSYNC in under a minute; DNS validation takes minutes once the
# records resolve; a CloudFront update deploys in ~3 min (historically up to 40).
CHANGE_TIMEOUT = 300
RECORDS_TIMEOUT = 120
CERT_TIMEOUT = 1800
DEPLOY_TIMEOUT = 2400
# CloudFront lets go of a certificate only after the update that removed it has deployed.
CERT_RELEASE_TIMEOUT = 600


class Route53Step(Step):
    name = "route53"
    requires = ("cloudfront",)
    services = ("route53", "acm", "cloudfront")
    description = "hosted zone, ACM certificate and alias records for the distribution"

    def enabled(self, ctx) -> bool:
        return bool(ctx.config.route53.domain)

    def reconcile(self, run: StepRun) -> dict:
        domain = run.config.route53.domain
        fqdn = record_name(run.config)
        r53 = run.clients.route53
        acm = acm_client(run)
        lab = run.ctx.lab
        edge = run.outputs_of("cloudfront")
        dist_id, dist_domain = edge["distribution_id"], edge["domain_name"]

        zone: dict = {}  # the zone as found or created: its id and whether msctl made it

        def find() -> Resource | None:
            found = find_zone(r53, lab, domain)
            zone.update(found or {})
            return zone if found else None

        def create() -> Resource:
            zone.update(_create_zone(run, domain))
            return zone

        zone_id = run.ensure(
            "hosted-zone",
            domain,
            id_key="Id",
            find=find,
            create=create,
            fixes=lambda found: _zone_fixes(run, found, domain),
        )
        cert_arn = run.ensure(
            "certificate",
            fqdn,
            id_key="CertificateArn",
            find=lambda: find_certificate(acm, lab, fqdn),
            create=lambda: _request_certificate(run, acm, fqdn),
        )
        if not is_pending(cert_arn):
            for record in _validation_records(run, acm, cert_arn):
                _ensure_record(run, zone_id, record, f"certificate validation for {fqdn}")
            if not run.dry_run:
                _wait_issued(run, acm, cert_arn, fqdn, domain, zone_id, zone)

        _attach_to_distribution(run, dist_id, fqdn, cert_arn)
        for rtype in ("A", "AAAA"):
            desired = alias_record(fqdn, rtype, dist_domain)
            _ensure_alias(run, zone_id, desired, dist_domain)
        return {
            "zone_id": zone_id,
            "fqdn": fqdn,
            "certificate_arn": cert_arn,
            "zone_created": bool(zone.get("created", True)),
        }

    def verify(self, run: StepRun) -> list[Check]:
        """The dry reconcile, plus the certificate's status: a certificate still waiting for
        DNS validation exists but doesn't serve yet."""
        checks = super().verify(run)
        arn = run.outputs.get("certificate_arn")
        if arn and not is_pending(arn):
            status = acm_client(run).describe_certificate(CertificateArn=arn)["Certificate"]
            checks.append(
                Check(
                    f"certificate {run.outputs['fqdn']} issued",
                    status["Status"] == "ISSUED",
                    status["Status"],
                )
            )
        return checks

    def teardown(self, run: StepRun) -> None:
        domain = run.config.route53.domain
        fqdn = record_name(run.config)
        r53 = run.clients.route53
        acm = acm_client(run)
        lab = run.ctx.lab
        zone = find_zone(r53, lab, domain)
        certs = find_certificates(acm, lab, fqdn)
        cert_arns = [c["CertificateArn"] for c in certs]

        if zone is not None:
            zone_id = zone["Id"]
            for rtype in ("A", "AAAA"):
                run.remove(
                    "dns-record",
                    f"{fqdn} {rtype}",
                    find=lambda t=rtype: _cloudfront_alias(r53, zone_id, fqdn, t),
                    delete=lambda rec: _change(run, zone_id, "DELETE", [rec]),
                )
            for record in _stale_validation_records(r53, acm, zone_id, fqdn, cert_arns):
                run.remove(
                    "dns-record",
                    f"{record['Name'].rstrip('.')} CNAME",
                    find=lambda r=record: r,
                    delete=lambda rec: _change(run, zone_id, "DELETE", [rec]),
                )
        for dist_id in _distributions_using(run, fqdn, cert_arns):
            run.setting(
                "distribution-alias",
                fqdn,
                ok=False,
                action="delete",
                detail=f"remove it and its certificate from distribution {dist_id}",
                apply=lambda d=dist_id: _detach(run, d, fqdn, cert_arns),
            )
        for cert in certs:
            arn = cert["CertificateArn"]
            run.remove(
                "certificate",
                fqdn,
                find=lambda c=cert: c,
                delete=lambda _c, a=arn: run.retry(
                    lambda: acm.delete_certificate(CertificateArn=a),
                    codes=("ResourceInUseException",),
                    timeout=CERT_RELEASE_TIMEOUT,
                    reason="CloudFront releases the certificate once its update has deployed",
                ),
            )
        if zone is not None and zone["created"]:
            run.remove(
                "hosted-zone",
                domain,
                find=lambda: zone,
                delete=lambda z: _delete_zone(run, z),
            )


# ---------------------------------------------------------------- names and clients


def record_name(config) -> str:
    return f"{config.route53.record}.{config.route53.domain}"


def acm_client(run: StepRun):
    return run.clients.get("acm", region=CERT_REGION)


def _dns(name: str) -> str:
    """A DNS name compared the way Route 53 treats it: lower case, without the final dot."""
    return name.rstrip(".").lower()


def caller_reference(lab: str, domain: str) -> str:
    """Deterministic, so a retried create can recognise its zone (at most 128 characters)."""
    ref = f"msctl-{lab}-{domain}"
    if len(ref) > 100:
        ref = f"msctl-{lab}-{hashlib.sha256(domain.encode()).hexdigest()[:24]}"
    return ref


def idempotency_token(lab: str, fqdn: str) -> str:
    """ACM's IdempotencyToken: word characters, at most 32."""
    return hashlib.sha256(f"{lab}/{fqdn}".encode()).hexdigest()[:32]


# ---------------------------------------------------------------- hosted zone


def find_zone(r53, lab: str, domain: str) -> Resource | None:
    """The domain's public hosted zone (exact name), and whether this lab's msctl created it."""
    wanted = _dns(domain)
    zones: list[dict] = []
    kwargs: dict = {"DNSName": wanted}
    while True:
        page = r53.list_hosted_zones_by_name(**kwargs)
        zones += [
            z
            for z in page.get("HostedZones", [])
            if _dns(z["Name"]) == wanted and not z.get("Config", {}).get("PrivateZone")
        ]
        nxt = page.get("NextDNSName")
        if not page.get("IsTruncated") or nxt is None or _dns(nxt) != wanted:
            break
        kwargs = {"DNSName": nxt, "HostedZoneId": page["NextHostedZoneId"]}
    found = only_one(zones, f"public hosted zones for {domain}")
    if found is None:
        return None
    zone_id = found["Id"].split("/")[-1]
    tags = as_dict(
        r53.list_tags_for_resource(ResourceType="hostedzone", ResourceId=zone_id)[
            "ResourceTagSet"
        ].get("Tags")
    )
    created = tags.get(CREATED) == "true" and tags.get(LAB) == lab
    return {
        "Id": zone_id,
        "Name": found["Name"],
        "CallerReference": found.get("CallerReference", ""),
        "created": created,
    }


def _create_zone(run: StepRun, domain: str) -> Resource:
    r53 = run.clients.route53
    ref = caller_reference(run.ctx.lab, domain)
    config = {"Comment": f"msctl lab {run.ctx.lab}", "PrivateZone": False}
    try:
        created = r53.create_hosted_zone(Name=domain, CallerReference=ref, HostedZoneConfig=config)
    except ClientError as exc:
        if not is_code(exc, "HostedZoneAlreadyExists"):
            raise
        # The lookup just found no zone, so the reference belongs to a zone deleted earlier
        # (AWS never accepts a CallerReference twice): this is a new zone, with a new one.
        ref = f"{ref}-{int(time.time())}"
        created = r53.create_hosted_zone(Name=domain, CallerReference=ref, HostedZoneConfig=config)
    zone_id = created["HostedZone"]["Id"].split("/")[-1]
    _tag_created(run, zone_id, domain)
    servers = created.get("DelegationSet", {}).get("NameServers", [])
    run.emit(
        "note",
        f"created hosted zone {domain}: delegate the domain to {', '.join(servers)} at its "
        "registrar, or the certificate can't be validated",
    )
    return {"Id": zone_id, "Name": domain, "CallerReference": ref, "created": True}


def _tag_created(run: StepRun, zone_id: str, domain: str) -> None:
    tags = {**run.tags(domain), CREATED: "true"}
    run.clients.route53.change_tags_for_resource(
        ResourceType="hostedzone", ResourceId=zone_id, AddTags=as_list(tags)
    )


def _zone_fixes(run: StepRun, zone: Resource, domain: str) -> list[Fix]:
    """A zone msctl created whose tag never landed (interrupted right after the create) is
    recognised by its CallerReference and tagged, so that destroy removes it."""
    ours = zone.get("CallerReference", "").startswith(caller_reference(run.ctx.lab, domain))
    if zone["created"] or not ours:
        return []

    def tag():
        _tag_created(run, zone["Id"], domain)
        zone["created"] = True

    return [Fix(f"tag {CREATED}=true (created by msctl, tag missing)", tag)]


def _delete_zone(run: StepRun, zone: Resource) -> None:
    r53 = run.clients.route53
    left = [
        f"{r['Name']} {r['Type']}"
        for r in _all_records(r53, zone["Id"])
        if r["Type"] not in ("NS", "SOA")
    ]
    if left:
        raise StepError(
            f"hosted zone {zone['Name']} (created by msctl) still has records msctl didn't "
            f"make: {', '.join(left)}",
            hint="delete those records (or the zone) yourself, or keep the zone and remove "
            f"its {CREATED} tag, then run `msctl down` again",
        )
    r53.delete_hosted_zone(Id=zone["Id"])


# ---------------------------------------------------------------- records


def _all_records(r53, zone_id: str) -> list[dict]:
    records: list[dict] = []
    kwargs: dict = {"HostedZoneId": zone_id}
    while True:
        page = r53.list_resource_record_sets(**kwargs)
        records += page.get("ResourceRecordSets", [])
        if not page.get("IsTruncated"):
            return records
        kwargs = {
            "HostedZoneId": zone_id,
            "StartRecordName": page["NextRecordName"],
            "StartRecordType": page["NextRecordType"],
        }
        if page.get("NextRecordIdentifier"):
            kwargs["StartRecordIdentifier"] = page["NextRecordIdentifier"]


def find_record(r53, zone_id: str, name: str, rtype: str) -> Resource | None:
    """The record set of exactly this name and type (simple routing), as Route 53 has it."""
    page = r53.list_resource_record_sets(
        HostedZoneId=zone_id, StartRecordName=name, StartRecordType=rtype, MaxItems="1"
    )
    for record in page.get("ResourceRecordSets", []):
        if _dns(record["Name"]) == _dns(name) and record["Type"] == rtype:
            return exact(record)
    return None


def exact(record: Resource) -> Resource:
    """The record set as it must be sent back to DELETE it: an alias has no TTL."""
    keep = ("Name", "Type", "SetIdentifier", "Weight", "Region", "Failover", "GeoLocation")
    out = {k: record[k] for k in keep if k in record}
    if record.get("AliasTarget"):
        out["AliasTarget"] = record["AliasTarget"]
    else:
        out["TTL"] = record.get("TTL")
        out["ResourceRecords"] = record.get("ResourceRecords", [])
    return out


def _change(run: StepRun, zone_id: str, action: str, records: list[Resource]) -> None:
    r53 = run.clients.route53
    changed = r53.change_resource_record_sets(
        HostedZoneId=zone_id,
        ChangeBatch={"Changes": [{"Action": action, "ResourceRecordSet": r} for r in records]},
    )
    change_id = changed["ChangeInfo"]["Id"]

    def insync() -> tuple[bool, str]:
        status = r53.get_change(Id=change_id)["ChangeInfo"]["Status"]
        return status == "INSYNC", status

    names = ", ".join(f"{r['Name']} {r['Type']}" for r in records)
    run.wait(f"Route 53 change to {names}", insync, timeout=CHANGE_TIMEOUT)


def _ensure_record(run: StepRun, zone_id: str, desired: Resource, why: str) -> None:
    current = (
        None
        if is_pending(zone_id)
        else find_record(run.clients.route53, zone_id, desired["Name"], desired["Type"])
    )
    values = sorted(v["Value"] for v in desired["ResourceRecords"])
    ok = current is not None and (
        current.get("TTL") == desired["TTL"]
        and sorted(v["Value"] for v in current.get("ResourceRecords", [])) == values
    )
    run.setting(
        "dns-record",
        f"{desired['Name'].rstrip('.')} {desired['Type']}",
        ok=ok,
        detail=f"{why}: {', '.join(values)}",
        action="create" if current is None else "update",
        apply=lambda: _change(run, zone_id, "UPSERT", [desired]),
    )


def alias_record(fqdn: str, rtype: str, dist_domain: str) -> Resource:
    return {
        "Name": f"{fqdn}.",
        "Type": rtype,
        "AliasTarget": {
            "HostedZoneId": CLOUDFRONT_ZONE_ID,
            "DNSName": dist_domain,
            "EvaluateTargetHealth": False,
        },
    }


def _same_alias(current: Resource | None, desired: Resource) -> bool:
    if current is None or not current.get("AliasTarget"):
        return False
    have, want = current["AliasTarget"], desired["AliasTarget"]
    return (
        have.get("HostedZoneId") == want["HostedZoneId"]
        and _dns(have.get("DNSName", "")) == _dns(want["DNSName"])
        and bool(have.get("EvaluateTargetHealth")) == want["EvaluateTargetHealth"]
    )


def _ensure_alias(run: StepRun, zone_id: str, desired: Resource, dist_domain: str) -> None:
    name, rtype = desired["Name"].rstrip("."), desired["Type"]
    current = (
        None if is_pending(zone_id) else find_record(run.clients.route53, zone_id, name, rtype)
    )
    if current is not None and not _same_alias(current, desired):
        _refuse_foreign_record(run, current)
    run.setting(
        "dns-record",
        f"{name} {rtype}",
        ok=_same_alias(current, desired),
        detail=f"alias -> {dist_domain}",
        action="create" if current is None else "update",
        apply=lambda: _change(run, zone_id, "UPSERT", [desired]),
    )


def _refuse_foreign_record(run: StepRun, current: Resource) -> None:
    """Never overwrite a record that isn't an alias to one of this lab's distributions, or
    to a distribution that no longer exists (a rebuilt lab's previous one)."""
    name = f"{current['Name']} {current['Type']}"
    target = current.get("AliasTarget")
    if not target or target.get("HostedZoneId") != CLOUDFRONT_ZONE_ID:
        raise StepError(
            f"DNS record {name} exists and isn't a CloudFront alias; msctl won't overwrite it",
            hint="delete that record, or choose another route53.record name",
        )
    cf = run.clients.cloudfront
    old = _dns(target.get("DNSName", ""))
    for summary in _distribution_summaries(cf):
        if _dns(summary.get("DomainName", "")) != old:
            continue
        tags = cf.list_tags_for_resource(Resource=summary["ARN"])["Tags"].get("Items", [])
        if as_dict(tags).get(LAB) != run.ctx.lab:
            raise StepError(
                f"DNS record {name} points at CloudFront distribution {summary['Id']}, which "
                "isn't this lab's; msctl won't take the name over",
                hint="delete that record, or choose another route53.record name",
            )


# ---------------------------------------------------------------- certificate


def find_certificates(acm, lab: str, fqdn: str) -> list[Resource]:
    """Every certificate for fqdn tagged for this lab, whatever its status."""
    found = []
    kwargs: dict = {"CertificateStatuses": ALL_CERT_STATUSES}
    while True:
        page = acm.list_certificates(**kwargs)
        for summary in page.get("CertificateSummaryList", []):
            if _dns(summary.get("DomainName", "")) != _dns(fqdn):
                continue
            arn = summary["CertificateArn"]
            tags = as_dict(acm.list_tags_for_certificate(CertificateArn=arn).get("Tags"))
            if tags.get(LAB) == lab:
                found.append({"CertificateArn": arn, "DomainName": summary["DomainName"]})
        token = page.get("NextToken")
        if not token:
            return found
        kwargs = {"CertificateStatuses": ALL_CERT_STATUSES, "NextToken": token}


def find_certificate(acm, lab: str, fqdn: str) -> Resource | None:
    return only_one(find_certificates(acm, lab, fqdn), f"ACM certificates for {fqdn}")


def _request_certificate(run: StepRun, acm, fqdn: str) -> Resource:
    arn = acm.request_certificate(
        DomainName=fqdn,
        ValidationMethod="DNS",
        IdempotencyToken=idempotency_token(run.ctx.lab, fqdn),
        Tags=as_list(run.tags(fqdn)),
    )["CertificateArn"]
    return {"CertificateArn": arn, "DomainName": fqdn}


def _validation_records(run: StepRun, acm, cert_arn: str) -> list[Resource]:
    """The CNAME records ACM asks for. Right after the request ACM needs a few seconds to
    publish them: apply waits; plan shows what is known."""
    seen: dict = {}

    def published() -> tuple[bool, str]:
        cert = acm.describe_certificate(CertificateArn=cert_arn)["Certificate"]
        options = cert.get("DomainValidationOptions", [])
        records = [o["ResourceRecord"] for o in options if o.get("ResourceRecord")]
        seen["records"] = records
        seen["status"] = cert.get("Status")
        done = bool(records) and len(records) == len(options)
        return done, f"{len(records)} of {len(options)} validation records published"

    if run.dry_run:
        published()
    else:
        run.wait(f"ACM validation records for {cert_arn}", published, timeout=RECORDS_TIMEOUT)
    if seen.get("status") == "ISSUED" and not seen.get("records"):
        return []
    unique = {(_dns(r["Name"]), r["Type"]): r for r in seen.get("records", [])}
    return [
        {
            "Name": r["Name"],
            "Type": r["Type"],
            "TTL": VALIDATION_TTL,
            "ResourceRecords": [{"Value": r["Value"]}],
        }
        for r in unique.values()
    ]


def _wait_issued(
    run: StepRun, acm, cert_arn: str, fqdn: str, domain: str, zone_id: str, zone: dict
) -> None:
    def issued() -> tuple[bool, str]:
        status = acm.describe_certificate(CertificateArn=cert_arn)["Certificate"]["Status"]
        if status in DEAD_CERT_STATUSES:
            raise StepError(
                f"the ACM certificate for {fqdn} is {status}",
                hint="run `msctl down --only route53` and `msctl up` to request a new one",
            )
        return status == "ISSUED", status

    try:
        run.wait(f"ACM certificate for {fqdn} to be issued", issued, timeout=CERT_TIMEOUT)
    except WaitTimeout as exc:
        hint = "run the same command again to keep waiting"
        if zone.get("created"):
            servers = run.clients.route53.get_hosted_zone(Id=zone_id).get("DelegationSet", {})
            hint = (
                f"ACM validates through DNS: the registrar of {domain} must delegate it to "
                f"{', '.join(servers.get('NameServers', []))}; then run the same command again"
            )
        raise StepError(str(exc), hint=hint) from exc


def _stale_validation_records(
    r53, acm, zone_id: str, fqdn: str, cert_arns: list[str]
) -> list[Resource]:
    """The validation CNAMEs of this lab's certificates, plus ACM validation CNAMEs left for
    fqdn by a certificate that is already gone (so that a zone msctl made can be deleted)."""
    wanted: dict[tuple[str, str], str] = {}
    for arn in cert_arns:
        try:
            cert = acm.describe_certificate(CertificateArn=arn)["Certificate"]
        except ClientError as exc:
            if is_code(exc, "ResourceNotFoundException"):
                continue
            raise
        for option in cert.get("DomainValidationOptions", []):
            rr = option.get("ResourceRecord")
            if rr:
                wanted[(_dns(rr["Name"]), rr["Type"])] = _dns(rr["Value"])
    found = []
    for record in _all_records(r53, zone_id):
        name = _dns(record["Name"])
        if record["Type"] != "CNAME":
            continue
        values = [_dns(v["Value"]) for v in record.get("ResourceRecords", [])]
        ours = (name, "CNAME") in wanted and values == [wanted[(name, "CNAME")]]
        left_by_acm = (
            name.startswith("_")
            and name.endswith(f".{_dns(fqdn)}")
            and bool(values)
            and all(v.endswith(".acm-validations.aws") for v in values)
        )
        if ours or left_by_acm:
            found.append(exact(record))
    return found


# ---------------------------------------------------------------- distribution


def _distribution_ok(config: dict, fqdn: str, cert_arn: str) -> bool:
    aliases = config.get("Aliases", {}).get("Items") or []
    cert = config.get("ViewerCertificate", {})
    return (
        aliases == [fqdn]
        and cert.get("ACMCertificateArn") == cert_arn
        and cert.get("SSLSupportMethod") == SSL_SUPPORT
        and cert.get("MinimumProtocolVersion") == MIN_TLS
        and not cert.get("CloudFrontDefaultCertificate")
    )


def _attach_to_distribution(run: StepRun, dist_id: str, fqdn: str, cert_arn: str) -> None:
    """The name and its certificate on the distribution: a "create" while the distribution
    doesn't carry the name yet, an "update" when it does with other settings."""
    cf = run.clients.cloudfront
    ok = has_alias = False
    if not is_pending(dist_id):
        config = cf.get_distribution_config(Id=dist_id)["DistributionConfig"]
        ok = _distribution_ok(config, fqdn, cert_arn)
        has_alias = fqdn in ((config.get("Aliases") or {}).get("Items") or [])

    def attach():
        _update_distribution(
            run,
            dist_id,
            lambda config: {
                **config,
                "Aliases": {"Quantity": 1, "Items": [fqdn]},
                "ViewerCertificate": {
                    "CloudFrontDefaultCertificate": False,
                    "ACMCertificateArn": cert_arn,
                    "SSLSupportMethod": SSL_SUPPORT,
                    "MinimumProtocolVersion": MIN_TLS,
                },
            },
        )

    run.setting(
        "distribution-alias",
        fqdn,
        ok=ok,
        detail=f"on distribution {dist_id} with its ACM certificate ({SSL_SUPPORT}, {MIN_TLS})",
        action="update" if has_alias else "create",
        apply=attach,
    )


def _update_distribution(run: StepRun, dist_id: str, change: Callable[[dict], dict]) -> None:
    cf = run.clients.cloudfront
    current = cf.get_distribution_config(Id=dist_id)
    cf.update_distribution(
        Id=dist_id,
        IfMatch=current["ETag"],
        DistributionConfig=change(current["DistributionConfig"]),
    )

    def deployed() -> tuple[bool, str]:
        status = cf.get_distribution(Id=dist_id)["Distribution"]["Status"]
        return status == "Deployed", status

    run.wait(f"CloudFront distribution {dist_id} to deploy", deployed, timeout=DEPLOY_TIMEOUT)


def _distribution_summaries(cf) -> list[dict]:
    items: list[dict] = []
    kwargs: dict = {}
    while True:
        page = cf.list_distributions(**kwargs)["DistributionList"]
        items += page.get("Items") or []
        if not page.get("IsTruncated"):
            return items
        kwargs = {"Marker": page["NextMarker"]}


def _distributions_using(run: StepRun, fqdn: str, cert_arns: list[str]) -> list[str]:
    """Distributions that carry fqdn as an alias or one of these certificates: the lab's
    distribution from the cloudfront step's outputs, any listed with the alias, and any the
    certificates say use them (found without state, too)."""
    cf = run.clients.cloudfront
    acm = acm_client(run)
    candidates: list[str] = []
    own = run.outputs_of("cloudfront").get("distribution_id")
    if own and not is_pending(own):
        candidates.append(own)
    for summary in _distribution_summaries(cf):
        if fqdn in ((summary.get("Aliases") or {}).get("Items") or []):
            candidates.append(summary["Id"])
    for arn in cert_arns:
        try:
            cert = acm.describe_certificate(CertificateArn=arn)["Certificate"]
        except ClientError as exc:
            if is_code(exc, "ResourceNotFoundException"):
                continue
            raise
        candidates += [u.split("/")[-1] for u in cert.get("InUseBy", []) if ":distribution/" in u]
    using = []
    for dist_id in dict.fromkeys(candidates):
        try:
            config = cf.get_distribution_config(Id=dist_id)["DistributionConfig"]
        except ClientError as exc:
            if is_code(exc, "NoSuchDistribution"):
                continue  # already gone: nothing holds the name or the certificate
            raise
        aliases = (config.get("Aliases") or {}).get("Items") or []
        cert = (config.get("ViewerCertificate") or {}).get("ACMCertificateArn")
        if fqdn in aliases or (cert and cert in cert_arns):
            using.append(dist_id)
    return using


def _detach(run: StepRun, dist_id: str, fqdn: str, cert_arns: list[str]) -> None:
    def change(config: dict) -> dict:
        aliases = [a for a in (config.get("Aliases") or {}).get("Items") or [] if a != fqdn]
        out = {**config, "Aliases": {"Quantity": len(aliases), "Items": aliases}}
        if not aliases:
            out["Aliases"] = {"Quantity": 0}
        if (config.get("ViewerCertificate") or {}).get("ACMCertificateArn") in cert_arns:
            out["ViewerCertificate"] = {"CloudFrontDefaultCertificate": True}
        return out

    try:
        _update_distribution(run, dist_id, change)
    except ClientError as exc:
        if not is_code(exc, "NoSuchDistribution"):
            raise


def _cloudfront_alias(r53, zone_id: str, fqdn: str, rtype: str) -> Resource | None:
    """The alias record msctl made: fqdn, to a CloudFront distribution."""
    record = find_record(r53, zone_id, fqdn, rtype)
    target = (record or {}).get("AliasTarget") or {}
    return record if target.get("HostedZoneId") == CLOUDFRONT_ZONE_ID else None
