"""What `msctl state` does beyond one store: make or check the state bucket, and move a
lab's state between backends (push/pull).

The bucket must be encrypted (SSE-S3 or KMS), versioned (an overwritten or deleted state can
be recovered), blocked from public access (all four settings) and tagged msctl:state=true.
`init` creates it so. On an existing bucket it changes only what is missing, and only when the
bucket is msctl's (that tag) or the user says `adopt`: these are bucket-wide settings, and on a
bucket that serves something else, versioning can't be turned off again and Block Public
Access may break what it serves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .aws.errors import describe, error_code
from .state import StateStore
from .state_checks import StateError

TAG = ("msctl:state", "true")
PROPERTIES = {
    "public_access": "Block Public Access (all four settings)",
    "encryption": "default encryption (SSE-S3)",
    "versioning": "versioning",
    "tag": "tag msctl:state=true",
}
_BLOCK_ALL = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
_ENCRYPTED = ("AES256", "aws:kms", "aws:kms:dsse")


@dataclass
class BucketReport:
    bucket: str
    region: str
    created: bool = False
    owned: bool = False  # msctl's: created by this run or tagged msctl:state=true
    fixed: list[str] = field(default_factory=list)  # PROPERTIES keys set by this run
    missing: list[str] = field(default_factory=list)  # PROPERTIES keys still missing

    @property
    def ok(self) -> bool:
        return not self.missing


def _code(call, *absent: str) -> Any:
    """One S3 call; None when it answers one of the ``absent`` codes."""
    try:
        return call()
    except ClientError as exc:
        if error_code(exc) in absent:
            return None
        raise


def _tags(client, bucket: str) -> list[dict]:
    found = _code(lambda: client.get_bucket_tagging(Bucket=bucket), "NoSuchTagSet")
    return found["TagSet"] if found else []


def inspect_bucket(client, bucket: str) -> list[str]:
    """The PROPERTIES the bucket lacks, as their keys."""
    missing = []
    block = _code(
        lambda: client.get_public_access_block(Bucket=bucket),
        "NoSuchPublicAccessBlockConfiguration",
    )
    if not block or not all(block["PublicAccessBlockConfiguration"].get(k) for k in _BLOCK_ALL):
        missing.append("public_access")
    sse = _code(
        lambda: client.get_bucket_encryption(Bucket=bucket),
        "ServerSideEncryptionConfigurationNotFoundError",
    )
    rules = sse["ServerSideEncryptionConfiguration"]["Rules"] if sse else []
    algorithms = {
        r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules
    }
    if not algorithms & set(_ENCRYPTED):
        missing.append("encryption")
    if client.get_bucket_versioning(Bucket=bucket).get("Status") != "Enabled":
        missing.append("versioning")
    if {"Key": TAG[0], "Value": TAG[1]} not in _tags(client, bucket):
        missing.append("tag")
    return missing


def _set(client, bucket: str, prop: str) -> None:
    if prop == "public_access":
        client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=_BLOCK_ALL)
    elif prop == "encryption":
        rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
        client.put_bucket_encryption(
            Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]}
        )
    elif prop == "versioning":
        client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    else:  # PutBucketTagging replaces the whole set: keep the others
        kept = [t for t in _tags(client, bucket) if t["Key"] != TAG[0]]
        tags = [*kept, {"Key": TAG[0], "Value": TAG[1]}]
        client.put_bucket_tagging(Bucket=bucket, Tagging={"TagSet": tags})


def _exists(client, bucket: str) -> bool:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return False
        if error_code(exc) in ("403", "AccessDenied", "Forbidden"):
            raise StateError(
                f"bucket {bucket} exists but these credentials may not use it (another "
                "account's bucket, or no s3:ListBucket permission); choose another name"
            ) from None
        raise
    return True


def _create(client, bucket: str, region: str) -> bool:
    """Create the bucket; False when it turned out to be ours already."""
    where = {} if region == "us-east-1" else {"LocationConstraint": region}
    try:
        client.create_bucket(
            Bucket=bucket, **({"CreateBucketConfiguration": where} if where else {})
        )
    except ClientError as exc:
        if error_code(exc) == "BucketAlreadyOwnedByYou":
            return False
        if error_code(exc) == "BucketAlreadyExists":
            raise StateError(
                f"bucket name {bucket} is taken by another AWS account (bucket names are "
                "global); choose another"
            ) from None
        raise
    return True


def init_bucket(client, bucket: str, region: str, *, adopt: bool = False) -> BucketReport:
    """Create the state bucket with every property, or check an existing one and set what it
    lacks when it is msctl's (or ``adopt``). Reports what S3 says afterwards."""
    report = BucketReport(bucket, region)
    try:
        report.created = not _exists(client, bucket) and _create(client, bucket, region)
        missing = list(PROPERTIES) if report.created else inspect_bucket(client, bucket)
        if not report.created:
            found = client.get_bucket_location(Bucket=bucket).get("LocationConstraint")
            report.region = found or "us-east-1"
        report.owned = report.created or "tag" not in missing
        if report.owned or adopt:
            for prop in missing:
                _set(client, bucket, prop)
            report.fixed = missing
        report.missing = inspect_bucket(client, bucket)
    except (ClientError, BotoCoreError) as exc:
        text, hint = describe(exc)
        raise StateError(f"bucket {bucket}: {text}" + (f"; {hint}" if hint else "")) from None
    report.fixed = [p for p in report.fixed if p not in report.missing]
    return report


# ------------------------------------------------------------------ push / pull


def _last_change(body: dict) -> str:
    """The latest step update ("" when none): ISO times in UTC compare as strings."""
    return max((s.get("updated_at") or "" for s in body.get("steps", {}).values()), default="")


def transfer(source: StateStore, dest: StateStore, *, force: bool, command: str) -> str:
    """Copy the lab's state from ``source`` to ``dest`` (the same document, so the lab is used
    from there with no resource changes), both locked. A different state already at
    ``dest`` is replaced only when ``force``. Returns what was done, in one line."""
    lab = source.lab
    with source.locked(command), dest.locked(command):
        if not source.exists():
            raise StateError(f"there is no state of lab '{lab}' at {source.path} to copy")
        source.load()
        dest.load()
        body = source.snapshot()
        if dest.exists():
            theirs = dest.snapshot()
            if theirs == body:
                return f"{dest.path} already holds this state of lab '{lab}'; nothing copied"
            if not force:
                at, ours = _last_change(theirs), _last_change(body)
                newer = " newer" if at > ours else ""
                raise StateError(
                    f"{dest.path} already holds a different{newer} state of lab '{lab}' "
                    f"(last changed {at or 'never'}; the one at {source.path}: "
                    f"{ours or 'never'}); pass --force to replace it"
                )
        dest.replace(body)
    return f"copied the state of lab '{lab}' from {source.path} to {dest.path}"
