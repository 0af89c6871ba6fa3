"""cloudfront: one distribution in front of the API and the static bucket (seed 6.1).

- Origin `api`: the REST API's regional domain with origin path `/<stage>`, HTTPS only
  (TLS 1.2). The behaviour `cloudfront.api_path_pattern` (`/api/*`) goes there with every
  method, caching disabled (managed CachingDisabled) and every viewer header but Host
  (managed AllViewerExceptHostHeader): API Gateway answers only to its own Host name.
  CloudFront forwards the path unchanged, so `/api/auth/login` reaches stage `prod`,
  resource `/api/auth/login` (see steps/apigw.py).
- Origin `static`: the bucket's regional domain through origin access control
  `<lab>-static-oac` (SigV4, always); default behaviour GET/HEAD, managed CachingOptimized,
  root object index.html, origin path `/site`. The bucket stays private: this step adds the
  bucket policy statement that lets only this distribution read the site's prefix, so the
  notification objects (`notifications/`) are never served. (An explicit Deny would say the
  same, but moto applies a bucket policy's Deny to every caller, Lambda included.)

The distribution is found by its tags; a re-run compares the fields msctl manages with the
live DistributionConfig and updates (IfMatch the live ETag) only when they differ. Aliases
and the viewer certificate belong to the route53 step and are left as they are.

Destroy: disable, wait until the disable has deployed, delete (retrying
DistributionNotDisabled, which AWS answers for a while even after "Deployed"), then the
origin access control and msctl's bucket policy statements (others are kept).
"""

from __future__ import annotations

import copy
import json
from typing import Any

from botocore.exceptions import ClientError

from ..aws.errors import is_code
from ..aws.tags import LAB, NAME, as_dict, as_list
from ..engine.model import Pending, is_pending
from ..engine.step import Fix, Resource, Step, StepRun, only_one
from .s3 import SITE_PREFIX, derived_name

# AWS managed policies (the same ids in every account).
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
API_ORIGIN = "api"
STATIC_ORIGIN = "static"
ALL_METHODS = ["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"]
READ_METHODS = ["GET", "HEAD"]
VIEWER_PROTOCOL = "redirect-to-https"
HTTP_VERSION = "http2and3"
ROOT_OBJECT = "index.html"
ORIGIN_TLS = ["TLSv1.2"]
SERVICE = "cloudfront.amazonaws.com"
READ_SID = "msctl-cloudfront-oac-read"
# Earlier versions added a Deny on notifications/; it is still removed as one of ours.
DENY_SID = "msctl-cloudfront-deny-notifications"
OUR_SIDS = (READ_SID, DENY_SID)
# ~3 min on AWS, historically 15-40: a generous bound, polled every few seconds.
DEPLOY_TIMEOUT = 2400
# DistributionNotDisabled can last a few minutes after the disable reports Deployed.
DELETE_TIMEOUT = 900
OAC_IN_USE_TIMEOUT = 300


class CloudFrontStep(Step):
    name = "cloudfront"
    requires = ("apigw", "s3")
    services = ("cloudfront", "s3", "sts")
    description = "CloudFront distribution: /api/* to API Gateway, the rest to S3 (OAC)"

    def reconcile(self, run: StepRun) -> dict:
        cf = run.clients.cloudfront
        lab = run.ctx.lab
        api = run.outputs_of("apigw")
        site = run.outputs_of("s3")
        oac_name = oac_name_of(run)

        oac_id = run.ensure(
            "origin-access-control",
            oac_name,
            id_key="Id",
            find=lambda: find_oac(cf, oac_name),
            create=lambda: _create_oac(run, oac_name),
            fixes=lambda oac: _oac_fixes(cf, oac),
        )
        name = distribution_name(run)
        desired = desired_config(run, api, site, oac_id)
        seen: dict[str, Resource] = {}

        def find() -> Resource | None:
            found = find_distribution(cf, lab, name)
            if found:
                seen["dist"] = found
            return found

        def create() -> Resource:
            seen["dist"] = cf.create_distribution_with_tags(
                DistributionConfigWithTags={
                    "DistributionConfig": desired,
                    "Tags": {"Items": as_list(run.tags(name))},
                }
            )["Distribution"]
            return seen["dist"]

        dist_id = run.ensure(
            "distribution",
            name,
            id_key="Id",
            arn_key="ARN",
            after=[api["api_domain"], site["bucket_regional_domain"], oac_id],
            find=find,
            create=create,
            fixes=lambda dist: _distribution_fixes(run, dist, desired),
        )
        dist = seen.get("dist") or {}
        arn = dist.get("ARN") or Pending(f"ARN of {name}")
        if not is_pending(dist_id):
            run.wait(
                f"distribution {dist_id} to deploy",
                lambda: _deployed(cf, dist_id),
                timeout=DEPLOY_TIMEOUT,
            )
        self._bucket_policy(run, site, arn)
        return {
            "distribution_id": dist_id,
            "domain_name": dist.get("DomainName") or Pending(f"domain name of {name}"),
            "arn": arn,
            "oac_id": oac_id,
        }

    def _bucket_policy(self, run: StepRun, site: dict, dist_arn: str) -> None:
        s3 = run.clients.s3
        bucket = site["bucket"]
        wanted = policy_statements(site["bucket_arn"], dist_arn)
        label = f"{bucket} CloudFront read"
        if is_pending(bucket, dist_arn):
            run.setting(
                "bucket-policy",
                label,
                ok=False,
                detail="this distribution only",
                action="create",
                apply=lambda: None,
            )
            return
        current = bucket_policy(s3, bucket) or {}
        ours = [s for s in current.get("Statement", []) if s.get("Sid") in OUR_SIDS]
        run.setting(
            "bucket-policy",
            label,
            ok=canonical(ours) == canonical(wanted),
            detail=f"GetObject for {dist_arn} only",
            action="create" if not ours else "update",
            apply=lambda: _merge_policy(s3, bucket, wanted),
        )

    def teardown(self, run: StepRun) -> None:
        cf = run.clients.cloudfront
        s3 = run.clients.s3
        name = distribution_name(run)
        oac_name = oac_name_of(run)
        run.remove(
            "distribution",
            name,
            find=lambda: find_distribution(cf, run.ctx.lab, name),
            delete=lambda dist: _delete_distribution(run, dist),
        )
        run.remove(
            "origin-access-control",
            oac_name,
            find=lambda: find_oac(cf, oac_name),
            delete=lambda oac: run.retry(
                lambda: cf.delete_origin_access_control(
                    Id=oac["Id"], IfMatch=cf.get_origin_access_control(Id=oac["Id"])["ETag"]
                ),
                codes=("OriginAccessControlInUse", "PreconditionFailed"),
                timeout=OAC_IN_USE_TIMEOUT,
                reason="the deleted distribution still holds the origin access control",
            ),
        )
        bucket = run.outputs_of("s3").get("bucket") or derived_name(run)

        def ours() -> Resource | None:
            current = bucket_policy(s3, bucket)
            if current and any(s.get("Sid") in OUR_SIDS for s in current.get("Statement", [])):
                return current
            return None

        run.remove(
            "bucket-policy",
            f"{bucket} CloudFront read",
            find=ours,
            delete=lambda _policy: _merge_policy(s3, bucket, []),
        )


# ---------------------------------------------------------------- names and lookups


def distribution_name(run: StepRun) -> str:
    return f"{run.ctx.lab}-distribution"


def oac_name_of(run: StepRun) -> str:
    return f"{run.ctx.lab}-static-oac"


def find_distribution(cf, lab: str, name: str) -> Resource | None:
    """The lab's distribution by its tags (the list doesn't carry tags: one read each)."""
    found = []
    for page in cf.get_paginator("list_distributions").paginate():
        for summary in (page.get("DistributionList") or {}).get("Items") or []:
            tags = as_dict(
                cf.list_tags_for_resource(Resource=summary["ARN"]).get("Tags", {}).get("Items")
            )
            if tags.get(LAB) == lab and tags.get(NAME) == name:
                found.append(summary)
    return only_one(found, f"CloudFront distributions named {name}")


def find_oac(cf, name: str) -> Resource | None:
    """Origin access controls can't be tagged; their names are unique in the account."""
    found = [
        item
        for page in cf.get_paginator("list_origin_access_controls").paginate()
        for item in (page.get("OriginAccessControlList") or {}).get("Items") or []
        if item.get("Name") == name
    ]
    return only_one(found, f"origin access controls named {name}")


def _deployed(cf, dist_id: str) -> tuple[bool, str]:
    status = cf.get_distribution(Id=dist_id)["Distribution"]["Status"]
    return status == "Deployed", status


# ---------------------------------------------------------------- origin access control

OAC_SETTINGS = {
    "SigningProtocol": "sigv4",
    "SigningBehavior": "always",
    "OriginAccessControlOriginType": "s3",
}


def _create_oac(run: StepRun, name: str) -> Resource:
    return run.clients.cloudfront.create_origin_access_control(
        OriginAccessControlConfig={
            "Name": name,
            "Description": f"msctl {run.ctx.lab}: CloudFront reads the static bucket",
            **OAC_SETTINGS,
        }
    )["OriginAccessControl"]


def _oac_fixes(cf, oac: Resource) -> list[Fix]:
    config = oac.get("OriginAccessControlConfig") or oac  # created (nested) or listed (flat)
    wrong = sorted(k for k, v in OAC_SETTINGS.items() if config.get(k) != v)
    if not wrong:
        return []

    def update() -> None:
        current = cf.get_origin_access_control(Id=oac["Id"])
        live = current["OriginAccessControl"]["OriginAccessControlConfig"]
        cf.update_origin_access_control(
            Id=oac["Id"],
            IfMatch=current["ETag"],
            OriginAccessControlConfig={**live, **OAC_SETTINGS},
        )

    return [Fix(", ".join(f"{k} -> {OAC_SETTINGS[k]}" for k in wrong), update)]


# ---------------------------------------------------------------- the distribution config


def desired_config(run: StepRun, api: dict, site: dict, oac_id: str) -> dict:
    cfg = run.config.cloudfront
    return {
        "CallerReference": f"msctl-{run.ctx.lab}-distribution",
        "Comment": cfg.comment,
        "Enabled": True,
        "DefaultRootObject": ROOT_OBJECT,
        "PriceClass": cfg.price_class,
        "HttpVersion": HTTP_VERSION,
        "IsIPV6Enabled": True,
        "Origins": {
            "Quantity": 2,
            "Items": [
                {
                    "Id": API_ORIGIN,
                    "DomainName": api["api_domain"],
                    "OriginPath": f"/{api['stage']}",
                    "CustomOriginConfig": {
                        "HTTPPort": 80,
                        "HTTPSPort": 443,
                        "OriginProtocolPolicy": "https-only",
                        "OriginSslProtocols": {"Quantity": len(ORIGIN_TLS), "Items": ORIGIN_TLS},
                    },
                },
                {
                    "Id": STATIC_ORIGIN,
                    "DomainName": site["bucket_regional_domain"],
                    "OriginPath": "/" + SITE_PREFIX.rstrip("/"),
                    "S3OriginConfig": {"OriginAccessIdentity": ""},
                    "OriginAccessControlId": oac_id,
                },
            ],
        },
        "DefaultCacheBehavior": _behavior(STATIC_ORIGIN, READ_METHODS, CACHING_OPTIMIZED, True),
        "CacheBehaviors": {
            "Quantity": 1,
            "Items": [
                {
                    "PathPattern": cfg.api_path_pattern,
                    **_behavior(
                        API_ORIGIN, ALL_METHODS, CACHING_DISABLED, False, ALL_VIEWER_EXCEPT_HOST
                    ),
                }
            ],
        },
    }


def _behavior(
    origin: str, methods: list[str], cache_policy: str, compress: bool, request_policy: str = ""
) -> dict:
    behavior = {
        "TargetOriginId": origin,
        "ViewerProtocolPolicy": VIEWER_PROTOCOL,
        "AllowedMethods": {
            "Quantity": len(methods),
            "Items": list(methods),
            "CachedMethods": {"Quantity": len(READ_METHODS), "Items": list(READ_METHODS)},
        },
        "CachePolicyId": cache_policy,
        "Compress": compress,
    }
    if request_policy:
        behavior["OriginRequestPolicyId"] = request_policy
    return behavior


# The top-level fields msctl owns; everything else (Aliases and ViewerCertificate from the
# route53 step, Logging, ...) is kept as it is on update.
MANAGED_FIELDS = (
    "Comment",
    "Enabled",
    "DefaultRootObject",
    "PriceClass",
    "HttpVersion",
    "IsIPV6Enabled",
    "Origins",
    "DefaultCacheBehavior",
    "CacheBehaviors",
)


def managed_view(config: dict, local: bool) -> dict:
    """The fields msctl manages, normalized so a desired and a live config compare equal."""
    origins = {}
    for origin in (config.get("Origins") or {}).get("Items") or []:
        view: dict[str, Any] = {
            "DomainName": origin.get("DomainName"),
            "OriginPath": origin.get("OriginPath") or "",
        }
        custom = origin.get("CustomOriginConfig")
        if custom:
            view["CustomOriginConfig"] = {
                "HTTPPort": custom.get("HTTPPort"),
                "HTTPSPort": custom.get("HTTPSPort"),
                "OriginProtocolPolicy": custom.get("OriginProtocolPolicy"),
                "OriginSslProtocols": sorted(
                    (custom.get("OriginSslProtocols") or {}).get("Items") or []
                ),
            }
        elif not local:
            # The local emulator drops an S3 origin's S3OriginConfig and OriginAccessControlId
            # from what it stores (aws-facts.md), so comparing them there would "fix" the
            # distribution on every run. On AWS both are compared and enforced.
            s3_config = origin.get("S3OriginConfig")
            view["S3OriginConfig"] = (
                None if s3_config is None else s3_config.get("OriginAccessIdentity", "")
            )
            view["OriginAccessControlId"] = origin.get("OriginAccessControlId") or ""
        origins[origin.get("Id")] = view
    return {
        "Comment": config.get("Comment") or "",
        "Enabled": bool(config.get("Enabled")),
        "DefaultRootObject": config.get("DefaultRootObject") or "",
        "PriceClass": config.get("PriceClass"),
        "HttpVersion": config.get("HttpVersion"),
        "IsIPV6Enabled": bool(config.get("IsIPV6Enabled")),
        "Origins": origins,
        "DefaultCacheBehavior": _behavior_view(config.get("DefaultCacheBehavior") or {}),
        # Order matters: CloudFront matches path patterns in list order.
        "CacheBehaviors": [
            _behavior_view(b) for b in (config.get("CacheBehaviors") or {}).get("Items") or []
        ],
    }


def _behavior_view(behavior: dict) -> dict:
    allowed = behavior.get("AllowedMethods") or {}
    return {
        "PathPattern": behavior.get("PathPattern"),
        "TargetOriginId": behavior.get("TargetOriginId"),
        "ViewerProtocolPolicy": behavior.get("ViewerProtocolPolicy"),
        "AllowedMethods": sorted(allowed.get("Items") or []),
        "CachedMethods": sorted((allowed.get("CachedMethods") or {}).get("Items") or []),
        "CachePolicyId": behavior.get("CachePolicyId") or "",
        "OriginRequestPolicyId": behavior.get("OriginRequestPolicyId") or "",
        "Compress": bool(behavior.get("Compress")),
    }


def _distribution_fixes(run: StepRun, dist: Resource, desired: dict) -> list[Fix]:
    cf = run.clients.cloudfront
    dist_id = dist["Id"]
    response = cf.get_distribution_config(Id=dist_id)
    live = response["DistributionConfig"]
    local = run.ctx.target.is_local
    have, want = managed_view(live, local), managed_view(desired, local)
    if have == want:
        return []
    differing = [k for k in MANAGED_FIELDS if have.get(k) != want.get(k)]

    def update() -> None:
        current = cf.get_distribution_config(Id=dist_id)
        merged = copy.deepcopy(current["DistributionConfig"])
        merged.update({k: copy.deepcopy(desired[k]) for k in MANAGED_FIELDS})
        cf.update_distribution(Id=dist_id, IfMatch=current["ETag"], DistributionConfig=merged)

    return [Fix(", ".join(differing) + " differ", update)]


def _delete_distribution(run: StepRun, dist: Resource) -> None:
    cf = run.clients.cloudfront
    dist_id = dist["Id"]
    current = cf.get_distribution_config(Id=dist_id)
    config = current["DistributionConfig"]
    if config.get("Enabled"):
        cf.update_distribution(
            Id=dist_id, IfMatch=current["ETag"], DistributionConfig={**config, "Enabled": False}
        )
    run.wait(
        f"distribution {dist_id} to deploy its disable",
        lambda: _deployed(cf, dist_id),
        timeout=DEPLOY_TIMEOUT,
    )

    def delete() -> None:
        # Each attempt uses the current ETag (PreconditionFailed: it changed meanwhile).
        cf.delete_distribution(Id=dist_id, IfMatch=cf.get_distribution(Id=dist_id)["ETag"])

    run.retry(
        delete,
        codes=("DistributionNotDisabled", "PreconditionFailed"),
        timeout=DELETE_TIMEOUT,
        reason="the disabled distribution is still being removed from the edge",
    )


# ---------------------------------------------------------------- the bucket policy


def policy_statements(bucket: str, dist_arn: str) -> list[dict]:
    """GetObject on the site's prefix, for this distribution only."""
    return [
        {
            "Sid": READ_SID,
            "Effect": "Allow",
            "Principal": {"Service": SERVICE},
            "Action": "s3:GetObject",
            "Resource": f"{bucket}/{SITE_PREFIX}*",
            "Condition": {"StringEquals": {"AWS:SourceArn": dist_arn}},
        },
    ]


def canonical(statements: list[dict]) -> list[str]:
    """Statements in a form where equal grants compare equal (single values as lists,
    keys and lists sorted)."""

    def canon(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: canon(v) for k, v in sorted(value.items())}
        if isinstance(value, list):
            items = [canon(v) for v in value]
            return items[0] if len(items) == 1 else sorted(items, key=json.dumps)
        return value

    return sorted(json.dumps(canon(s), sort_keys=True) for s in statements)


def bucket_policy(s3, bucket: str) -> dict | None:
    """The bucket's policy document ({"Statement": []} without one); None without the
    bucket."""
    try:
        return json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as exc:
        if is_code(exc, "NoSuchBucketPolicy"):
            return {"Statement": []}
        if is_code(exc, "NoSuchBucket"):
            return None
        raise


def _merge_policy(s3, bucket: str, ours: list[dict]) -> None:
    """Replace msctl's statements with `ours`, keeping every other statement; delete the
    policy when nothing remains. Read right before writing, so others' edits survive."""
    current = bucket_policy(s3, bucket)
    if current is None:
        return  # the bucket is gone
    statements = current.get("Statement", [])
    if isinstance(statements, dict):
        statements = [statements]
    kept = [s for s in statements if s.get("Sid") not in OUR_SIDS]
    if not kept and not ours:
        if statements:
            s3.delete_bucket_policy(Bucket=bucket)
        return
    document = {"Version": current.get("Version", "2012-10-17"), "Statement": kept + ours}
    if current.get("Id"):
        document["Id"] = current["Id"]
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(document))
