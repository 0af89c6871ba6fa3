"""The ACM certificate for the lab's name: requested in us-east-1 (CloudFront takes
certificates from there only), validated by DNS, waited for until ISSUED.

The route53 step puts the validation records in the zone; this module only talks to ACM.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from ..aws.tags import as_list
from ..aws.waiters import WaitTimeout
from ..engine.step import StepError
from ..resources import Resource
from ..resources.edge import CERTIFICATE
from .run import StepRun

VALIDATION_TTL = 300
DEAD = {"INACTIVE", "EXPIRED", "VALIDATION_TIMED_OUT", "REVOKED", "FAILED"}
RECORDS_TIMEOUT = 120  # ACM publishes the validation records seconds after the request
ISSUE_TIMEOUT = 1800  # minutes once the records resolve
RECORDS_EXPECTED = 10  # seconds, typically
ISSUE_EXPECTED = 120


def ensure_certificate(run: StepRun, fqdn: str) -> str:
    """The lab's certificate for fqdn (found by its domain and the lab's tag): its ARN."""
    acm = run.client(CERTIFICATE)

    def request() -> Resource:
        arn = acm.request_certificate(
            DomainName=fqdn,
            ValidationMethod="DNS",
            # New per create: within an hour ACM answers a token it has seen with the
            # certificate it made then, even a deleted one. The tag finds the lab's.
            IdempotencyToken=uuid.uuid4().hex,
            Tags=as_list(run.tags(fqdn)),
        )["CertificateArn"]
        return {"CertificateArn": arn, "DomainName": fqdn}

    return run.ensure(CERTIFICATE, fqdn, create=request)


def validation_records(run: StepRun, arn: str) -> list[Resource]:
    """The CNAME records ACM asks for, as record sets. Right after the request ACM needs a few
    seconds to publish them: apply waits; plan shows what is known."""
    acm = run.client(CERTIFICATE)
    seen: dict = {}

    def published() -> tuple[bool, str]:
        cert = acm.describe_certificate(CertificateArn=arn)["Certificate"]
        options = cert.get("DomainValidationOptions", [])
        seen["records"] = [o["ResourceRecord"] for o in options if o.get("ResourceRecord")]
        done = cert.get("Status") == "ISSUED" or len(seen["records"]) == len(options) > 0
        return done, f"{len(seen['records'])} of {len(options)} validation records published"

    if run.dry_run:
        published()
    else:
        run.wait(
            f"ACM validation records for {arn}",
            published,
            timeout=RECORDS_TIMEOUT,
            expected=RECORDS_EXPECTED,
        )
    unique = {(r["Name"].lower(), r["Type"]): r for r in seen["records"]}
    return [
        {
            "Name": r["Name"],
            "Type": r["Type"],
            "TTL": VALIDATION_TTL,
            "ResourceRecords": [{"Value": r["Value"]}],
        }
        for r in unique.values()
    ]


def is_validation_record(record: Resource, fqdn: str) -> bool:
    """An ACM validation CNAME for fqdn (`_<hash>.<fqdn>` -> `..acm-validations.aws`), of a
    certificate of the lab's or of one already deleted."""
    name = record["Name"].rstrip(".").lower()
    values = [v["Value"].rstrip(".") for v in record.get("ResourceRecords", [])]
    return (
        record["Type"] == "CNAME"
        and name.startswith("_")
        and name.endswith(f".{fqdn.lower()}")
        and bool(values)
        and all(v.endswith(".acm-validations.aws") for v in values)
    )


def status(run: StepRun, arn: str) -> str:
    return run.client(CERTIFICATE).describe_certificate(CertificateArn=arn)["Certificate"]["Status"]


def wait_issued(run: StepRun, arn: str, fqdn: str, hint: Callable[[], str]) -> None:
    """Until ACM has validated the certificate; `hint` says what to do after a timeout."""

    def issued() -> tuple[bool, str]:
        now = status(run, arn)
        if now in DEAD:
            raise StepError(
                f"the ACM certificate for {fqdn} is {now}",
                hint="run `msctl down --only route53` and `msctl up` to request a new one",
            )
        return now == "ISSUED", now

    try:
        run.wait(
            f"ACM certificate for {fqdn} to be issued",
            issued,
            timeout=ISSUE_TIMEOUT,
            expected=ISSUE_EXPECTED,
        )
    except WaitTimeout as exc:
        raise StepError(str(exc), hint=hint()) from exc
