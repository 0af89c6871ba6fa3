"""s3: the static-content bucket and the site in it (seed 2.3).

Unlike the seed, the bucket stays private (Block Public Access on, no public bucket policy):
CloudFront reads it through origin access control, and the cloudfront step adds that bucket
policy statement. This step never writes or removes a bucket policy.

The bucket is `<s3.bucket_prefix>-<suffix>`, the suffix being 8 hex characters of
sha256(account id, region, lab): the same name on every run, even with the state file lost.
An existing bucket is found first by its `msctl:lab`/`msctl:name` tags, then by the name
recorded in state, then by the derived name, so a re-run never creates a second bucket.

The site (`s3.site_dir`) is uploaded under `site/`, each object with its content type and its
MD5 in metadata; a re-run uploads only files whose MD5 differs from the object's, and deletes
only objects this step uploaded (marked in metadata) that no longer exist locally. The prefix
keeps the site apart from the notification Lambda's `notifications/` objects: CloudFront
(origin path `/site`) can read only the site, never a user's notifications.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
import weakref
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from ..aws.errors import error_code, is_code
from ..aws.tags import LAB, NAME, as_dict, as_list
from ..engine.model import is_pending
from ..engine.step import StepError
from ..resources import Resource
from ..resources.base import only_one
from ..resources.data import BUCKET, bucket_tags
from .base import LabStep
from .run import Fix, StepRun

DEFAULT_REGION = "us-east-1"  # CreateBucket there takes no LocationConstraint
PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
SSE_ALGORITHM = "AES256"  # SSE-S3
OWNERSHIP = "BucketOwnerEnforced"
MD5_META = "md5"  # x-amz-meta-md5: the file's MD5, also when the ETag isn't one
SITE_META = "msctl-site"  # x-amz-meta-msctl-site: <lab>; marks objects this step owns

# Explicit types for what a site is made of, with charsets for text; the rest from Python's
# built-in table (MimeTypes() ignores /etc/mime.types, so every machine answers the same).
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
}
_MIME = mimetypes.MimeTypes()


class S3Step(LabStep):
    name = "s3"
    requires = ()
    services = ("s3", "sts")
    description = "static-content bucket (private, for CloudFront) and the site"
    kinds = (BUCKET,)  # emptied of every version, then deleted

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.s3
        region = run.clients.region
        site = site_files(run.config.path(cfg.site_dir))  # a missing site fails before any change

        derived = derived_name(run)
        found = find_bucket(run, derived)
        bucket_name = found["Name"] if found else derived
        bucket = run.ensure(
            BUCKET,
            bucket_name,
            find=lambda: found,
            create=lambda: create_bucket(run, bucket_name),
            fixes=lambda b: bucket_fixes(run, b),
        )
        sync_site(run, bucket, site, new=found is None)
        return {
            "bucket": bucket_name,
            "bucket_arn": bucket_arn(bucket_name, region),
            "bucket_regional_domain": f"{bucket_name}.s3.{region}.amazonaws.com",
        }


# ---------------------------------------------------------------- naming and lookup


_ACCOUNTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def account_id(run: StepRun) -> str:
    """The account the credentials belong to, asked once per run of msctl (per Context)."""
    account = _ACCOUNTS.get(run.ctx)
    if account is None:
        account = _ACCOUNTS[run.ctx] = run.clients.sts.get_caller_identity()["Account"]
    return account


def derived_name(run: StepRun) -> str:
    """<prefix>-<8 hex>: stable for this account, region and lab, so a lost state file
    still finds the same bucket."""
    seed = f"{account_id(run)}/{run.clients.region}/{run.ctx.lab}"
    return f"{run.config.s3.bucket_prefix}-{hashlib.sha256(seed.encode()).hexdigest()[:8]}"


def bucket_arn(name: str, region: str = DEFAULT_REGION) -> str:
    if region.startswith("cn-"):
        partition = "aws-cn"
    elif region.startswith("us-gov-"):
        partition = "aws-us-gov"
    else:
        partition = "aws"
    return f"arn:{partition}:s3:::{name}"


def bucket_exists(s3, name: str) -> bool:
    """Whether a bucket of this account has this name. Someone else's bucket is an error:
    bucket names are global, and this lab can't use that name."""
    try:
        s3.head_bucket(Bucket=name)
        return True
    except ClientError as exc:
        code = error_code(exc)
        if code in ("404", "NoSuchBucket", "NotFound"):
            return False
        if code in ("403", "AccessDenied", "Forbidden"):
            raise StepError(
                f"bucket name {name} belongs to another AWS account (or this one may not read it)",
                hint="choose another s3.bucket_prefix in config/lab.yaml",
            ) from exc
        raise


def find_bucket(run: StepRun, derived: str) -> Resource | None:
    """By tags (this lab's buckets with the prefix, in this region), then by the name recorded
    in state, then by the derived name. An untagged bucket of that name is foreign (the
    ownership check refuses it), unless the journal says this lab was creating it when a run
    was interrupted: then the create goes on, and tags it."""
    s3 = run.clients.s3
    cfg = run.config.s3
    lab = run.ctx.lab
    prefix = f"{cfg.bucket_prefix}-"
    tagged = []
    pages = s3.get_paginator("list_buckets").paginate(
        Prefix=prefix, BucketRegion=run.clients.region
    )
    for page in pages:
        for listed in page.get("Buckets", []):
            name = listed["Name"]
            if not name.startswith(prefix):
                continue
            tags = bucket_tags(s3, name)
            if tags and tags.get(LAB) == lab and tags.get(NAME) == cfg.bucket_prefix:
                tagged.append(
                    {"Name": name, "Arn": bucket_arn(name, run.clients.region), "Tags": tags}
                )
    found = only_one(tagged, f"buckets named {cfg.bucket_prefix}")
    if found:
        return found
    recorded = [
        entry["id"]
        for key, entry in run.ctx.state.resources(run.step).items()
        if key.startswith(f"{BUCKET.name}:") and entry.get("id")
    ]
    creating = {i["logical"] for i in run.ctx.state.open_intents(run.step)}
    for name in dict.fromkeys([*recorded, derived]):
        if bucket_exists(s3, name):
            tags = bucket_tags(s3, name) or {}
            if not tags and f"{BUCKET.name}:{name}" in creating:
                return None
            return {"Name": name, "Arn": bucket_arn(name, run.clients.region), "Tags": tags}
    return None


# ---------------------------------------------------------------- create and fix


def create_bucket(run: StepRun, name: str) -> Resource:
    s3 = run.clients.s3
    region = run.clients.region
    tags = run.tags(run.config.s3.bucket_prefix)
    configuration: dict = {"LocationConstraint": region} if region != DEFAULT_REGION else {}

    def create(with_tags: bool) -> None:
        extra = {"Tags": as_list(tags)} if with_tags else {}
        settings = {**configuration, **extra}
        s3.create_bucket(
            Bucket=name,
            ObjectOwnership=OWNERSHIP,
            **({"CreateBucketConfiguration": settings} if settings else {}),
        )

    try:
        try:
            create(with_tags=True)
        except ClientError as exc:
            # Tagging at creation needs s3:TagResource too: without it AWS refuses the whole
            # create. Then create untagged and tag it right after (as Terraform and Pulumi do).
            if not is_code(exc, "AccessDenied"):
                raise
            run.emit("note", f"creating bucket {name} with its tags was refused; tagging it after")
            create(with_tags=False)
    except ClientError as exc:
        # Already ours (a create that answered too late): carry on and tag it below.
        if is_code(exc, "BucketAlreadyOwnedByYou"):
            pass
        elif is_code(exc, "BucketAlreadyExists"):
            raise StepError(
                f"bucket name {name} is already taken by another AWS account",
                hint="choose another s3.bucket_prefix in config/lab.yaml",
            ) from exc
        else:
            raise
    # Tags go in with CreateBucket; a bucket created without them (see above, or an endpoint
    # that ignores them: the local emulator does) gets them at once, before anything else.
    # The read also waits out the short time a new bucket may answer NoSuchBucket.
    current = run.retry(
        lambda: _tags_or_raise(s3, name),
        codes=("NoSuchBucket",),
        reason="the new bucket is not visible yet",
    )
    if any(current.get(k) != v for k, v in tags.items()):
        s3.put_bucket_tagging(Bucket=name, Tagging={"TagSet": as_list({**current, **tags})})
        current = {**current, **tags}
    return {"Name": name, "Arn": bucket_arn(name, run.clients.region), "Tags": current}


def _tags_or_raise(s3, name: str) -> dict[str, str]:
    try:
        return as_dict(s3.get_bucket_tagging(Bucket=name).get("TagSet"))
    except ClientError as exc:
        if is_code(exc, "NoSuchTagSet"):
            return {}
        raise


def bucket_fixes(run: StepRun, bucket: Resource) -> list[Fix]:
    s3 = run.clients.s3
    name = bucket["Name"]
    fixes = []

    wanted_tags = run.tags(run.config.s3.bucket_prefix)
    current_tags = bucket.get("Tags") or {}
    missing = sorted(k for k, v in wanted_tags.items() if current_tags.get(k) != v)
    if missing:
        fixes.append(
            Fix(
                f"tags {', '.join(missing)}",
                lambda: s3.put_bucket_tagging(
                    Bucket=name, Tagging={"TagSet": as_list({**current_tags, **wanted_tags})}
                ),
            )
        )

    try:
        block = s3.get_public_access_block(Bucket=name)["PublicAccessBlockConfiguration"]
    except ClientError as exc:
        if not is_code(exc, "NoSuchPublicAccessBlockConfiguration"):
            raise
        block = {}
    off = sorted(k for k in PUBLIC_ACCESS_BLOCK if not block.get(k))
    if off:
        fixes.append(
            Fix(
                f"block public access: {', '.join(off)} on",
                lambda: s3.put_public_access_block(
                    Bucket=name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK
                ),
            )
        )

    try:
        rules = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    except ClientError as exc:
        if not is_code(exc, "ServerSideEncryptionConfigurationNotFoundError"):
            raise
        rules = []
    algorithms = [
        r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules
    ]
    if algorithms != [SSE_ALGORITHM]:
        fixes.append(
            Fix(
                f"default encryption {'/'.join(a or '?' for a in algorithms) or 'none'} "
                f"-> {SSE_ALGORITHM}",
                lambda: s3.put_bucket_encryption(
                    Bucket=name,
                    ServerSideEncryptionConfiguration={
                        "Rules": [
                            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": SSE_ALGORITHM}}
                        ]
                    },
                ),
            )
        )

    try:
        ownership = [
            r.get("ObjectOwnership")
            for r in s3.get_bucket_ownership_controls(Bucket=name)["OwnershipControls"]["Rules"]
        ]
    except ClientError as exc:
        if not is_code(exc, "OwnershipControlsNotFoundError"):
            raise
        ownership = []
    if ownership != [OWNERSHIP]:
        fixes.append(
            Fix(
                f"object ownership {'/'.join(ownership) or 'none'} -> {OWNERSHIP}",
                lambda: s3.put_bucket_ownership_controls(
                    Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": OWNERSHIP}]}
                ),
            )
        )
    return fixes


# ---------------------------------------------------------------- the site


@dataclass(frozen=True)
class SiteFile:
    key: str
    path: Path
    md5: str
    content_type: str


def content_type(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    guessed, _encoding = _MIME.guess_type(path.name, strict=False)
    return guessed or "application/octet-stream"


SITE_PREFIX = "site/"


def site_files(root: Path) -> dict[str, SiteFile]:
    """Every file under the site directory by its object key (hidden files skipped)."""
    if not root.is_dir():
        raise StepError(
            f"the site directory {root} does not exist",
            hint="set s3.site_dir in config/lab.yaml to the folder holding the static site",
        )
    files: dict[str, SiteFile] = {}
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in sorted(filenames):
            if filename.startswith("."):
                continue
            path = Path(directory) / filename
            key = SITE_PREFIX + path.relative_to(root).as_posix()
            md5 = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
            files[key] = SiteFile(key, path, md5, content_type(path))
    return files


def _objects(s3, bucket: str) -> dict[str, str]:
    """Every object key under the site prefix with its ETag (without quotes)."""
    objects: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=SITE_PREFIX):
        for obj in page.get("Contents", []):
            objects[obj["Key"]] = obj.get("ETag", "").strip('"')
    return objects


def _metadata(s3, bucket: str, key: str) -> dict[str, str]:
    try:
        return s3.head_object(Bucket=bucket, Key=key).get("Metadata", {})
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return {}
        raise


def sync_site(run: StepRun, bucket: str, site: dict[str, SiteFile], new: bool) -> None:
    """Upload what differs, delete what this step uploaded and is gone locally."""
    s3 = run.clients.s3
    lab = run.ctx.lab
    objects = {} if new or is_pending(bucket) else _objects(s3, bucket)
    for key, local in site.items():
        if key not in objects:
            ok, action, detail = False, "create", "upload"
        elif objects[key] == local.md5:
            ok, action, detail = True, "update", local.md5
        else:
            # Not the MD5 as ETag (changed, or a multipart / KMS-encrypted object): the MD5
            # recorded in metadata decides.
            ok = _metadata(s3, bucket, key).get(MD5_META) == local.md5
            action, detail = "update", "content changed: upload"
        run.setting(
            "object",
            key,
            ok=ok,
            detail=detail if not ok else local.md5,
            action=action,
            apply=lambda f=local: _upload(s3, bucket, f, lab),
        )
    for key in sorted(set(objects) - set(site)):
        if _metadata(s3, bucket, key).get(SITE_META) != lab:
            continue  # not part of the site (e.g. notifications/ written by the Lambda)
        run.setting(
            "object",
            key,
            ok=False,
            detail="no longer in the site directory",
            action="delete",
            apply=lambda k=key: s3.delete_object(Bucket=bucket, Key=k),
        )


def _upload(s3, bucket: str, file: SiteFile, lab: str) -> None:
    body = file.path.read_bytes()
    digest = hashlib.md5(body, usedforsecurity=False)
    s3.put_object(
        Bucket=bucket,
        Key=file.key,
        Body=body,
        ContentType=file.content_type,
        ContentMD5=base64.b64encode(digest.digest()).decode(),
        Metadata={MD5_META: digest.hexdigest(), SITE_META: lab},
    )
