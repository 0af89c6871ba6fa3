"""cloudfront: one distribution in front of the API and the static bucket (seed 6.1).

- Origin `api`: the REST API's regional domain with origin path `/<stage>`, HTTPS only
  (TLS 1.2). The behaviour `cloudfront.api_path_pattern` (`/api/*`) goes there with every
  method, caching disabled (managed CachingDisabled) and every viewer header but Host
  (managed AllViewerExceptHostHeader): API Gateway answers only to its own Host name.
  CloudFront forwards the path unchanged, so `/api/auth/login` reaches stage `prod`,
  resource `/api/auth/login` (see steps/apigw.py).
- Origin `static`: the bucket's regional domain through origin access control
  `<lab>-static-oac` (SigV4, always; it can't be tagged: its description carries the lab's
  mark); default behaviour GET/HEAD, managed CachingOptimized, root object index.html,
  origin path `/site`. The bucket stays private: this step adds the bucket policy statement
  that lets only this distribution read the site's prefix, so the notification objects
  (`notifications/`) are never served. (An explicit Deny would say the same, but moto
  applies a bucket policy's Deny to every caller, Lambda included.)
- With `route53.domain`: the name `<record>.<domain>` and the route53 step's certificate
  (sni-only, TLSv1.2_2021) are in the distribution's config from its create; alias A and
  AAAA records in the zone point at it. Without: no name, the default certificate.

The distribution is found by its tags; a re-run compares the fields msctl manages with the
live DistributionConfig and updates (IfMatch the live ETag) only when they differ. Its ARN
and domain name are known at create, so the bucket policy and the alias records are written
while it deploys (~3.5 minutes on AWS); the step ends once it is Deployed, so the site
answers when `up` ends. Destroy removes the alias records and msctl's bucket policy
statements (others are kept), then the distribution (disable, wait deployed, delete) and
the origin access control.
"""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

from botocore.exceptions import ClientError

from ..aws.errors import is_code
from ..aws.tags import as_list
from ..engine.model import Pending, is_pending
from ..resources import Resource, mark, owner
from ..resources.edge import (
    DEPLOY_EXPECTED,
    DEPLOY_TIMEOUT,
    DISTRIBUTION,
    HOSTED_ZONE,
    ORIGIN_ACCESS_CONTROL,
    deployed,
)
from .base import LabStep
from .route53 import dns, ensure_record, find_record, record_name, remove_record
from .run import Fix, StepRun
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
SSL_SUPPORT = "sni-only"
MIN_TLS = "TLSv1.2_2021"
CLOUDFRONT_ZONE_ID = "Z2FDTNDATAQYW2"  # the fixed hosted zone id of every CloudFront alias
SERVICE = "cloudfront.amazonaws.com"
READ_SID = "msctl-cloudfront-oac-read"
# Earlier versions added a Deny on notifications/; it is still removed as one of ours.
DENY_SID = "msctl-cloudfront-deny-notifications"
OUR_SIDS = (READ_SID, DENY_SID)
OAC_SETTINGS = {
    "SigningProtocol": "sigv4",
    "SigningBehavior": "always",
    "OriginAccessControlOriginType": "s3",
}


class CloudFrontStep(LabStep):
    name = "cloudfront"
    requires = ("apigw", "s3", "route53")
    services = ("cloudfront", "s3", "sts", "route53")
    description = "CloudFront distribution: /api/* to API Gateway, the rest to S3 (OAC)"
    kinds = (ORIGIN_ACCESS_CONTROL, DISTRIBUTION)

    def names(self, config):
        return [(ORIGIN_ACCESS_CONTROL, oac_name(config.lab))]

    def reconcile(self, run: StepRun) -> dict:
        lab = run.ctx.lab
        api = run.outputs_of("apigw")
        site = run.outputs_of("s3")
        domain = domain_of(run)
        oac_id = run.ensure(
            ORIGIN_ACCESS_CONTROL,
            oac_name(lab),
            create=lambda: _create_oac(run, oac_name(lab)),
            fixes=lambda oac: _oac_fixes(run, oac),
        )
        name = distribution_name(lab)
        desired = desired_config(run, api, site, oac_id, domain)
        dist_id = run.ensure(
            DISTRIBUTION,
            name,
            after=[api["api_domain"], site["bucket_regional_domain"], oac_id],
            create=lambda: _create_distribution(run, name, desired),
            fixes=lambda dist: _distribution_fixes(run, dist, desired),
        )
        dist = run.got(DISTRIBUTION, name) or {}
        arn = dist.get("ARN") or Pending(f"ARN of {name}")
        dist_domain = dist.get("DomainName") or Pending(f"domain name of {name}")
        _bucket_policy(run, site, arn)
        if domain:
            for rtype in ("A", "AAAA"):
                ensure_record(
                    run,
                    domain["zone_id"],
                    alias_record(domain["fqdn"], rtype, dist_domain),
                    f"alias -> {dist_domain}",
                    foreign=lambda current: _foreign(run, current),
                    after=[dist_domain],
                )
        if not is_pending(dist_id):
            cf = run.client(DISTRIBUTION)
            run.wait(
                f"distribution {dist_id} to deploy",
                lambda: deployed(cf, dist_id),
                timeout=DEPLOY_TIMEOUT,
                expected=DEPLOY_EXPECTED,
            )
        return {
            "distribution_id": dist_id,
            "domain_name": dist_domain,
            "arn": arn,
            "oac_id": oac_id,
        }

    def teardown(self, run: StepRun) -> None:
        if run.config.route53.domain:
            _remove_aliases(run)
        s3 = run.clients.s3
        bucket = run.outputs_of("s3").get("bucket") or derived_name(run)
        current = bucket_policy(s3, bucket) or {}
        if any(s.get("Sid") in OUR_SIDS for s in current.get("Statement", [])):
            run.setting(
                "bucket-policy",
                f"{bucket} CloudFront read",
                ok=False,
                detail="msctl's statements (others are kept)",
                action="delete",
                apply=lambda: _merge_policy(s3, bucket, []),
            )
        super().teardown(run)


# ---------------------------------------------------------------- names and the domain


def distribution_name(lab: str) -> str:
    return f"{lab}-distribution"


def oac_name(lab: str) -> str:
    return f"{lab}-static-oac"


def domain_of(run: StepRun) -> dict:
    """The route53 step's outputs (zone_id, fqdn, certificate_arn) when it is on, else {}."""
    outputs = run.outputs_of("route53") if run.config.route53.domain else {}
    return outputs if outputs.get("certificate_arn") else {}


def alias_record(fqdn: str, rtype: str, dist_domain: str) -> Resource:
    target = {"HostedZoneId": CLOUDFRONT_ZONE_ID, "DNSName": dist_domain}
    return {
        "Name": f"{fqdn}.",
        "Type": rtype,
        "AliasTarget": {**target, "EvaluateTargetHealth": False},
    }


def _foreign(run: StepRun, record: Resource) -> str:
    """Why a record at the lab's name isn't msctl's to change ("" when it is an alias to this
    lab's distribution, or to one that no longer exists)."""
    what = f"DNS record {dns(record['Name'])} {record['Type']}"
    target = record.get("AliasTarget") or {}
    if target.get("HostedZoneId") != CLOUDFRONT_ZONE_ID:
        return f"{what} exists and isn't a CloudFront alias"
    cf = run.client(DISTRIBUTION)
    for dist in DISTRIBUTION.scan(cf, run.ctx.lab):
        same = dns(dist["DomainName"]) == dns(target["DNSName"])
        if same and owner(DISTRIBUTION.tags(cf, dist)) != run.ctx.lab:
            return f"{what} points at CloudFront distribution {dist['Id']}, not this lab's"
    return ""


def _remove_aliases(run: StepRun) -> None:
    r53 = run.client(HOSTED_ZONE)
    zone = HOSTED_ZONE.find(r53, run.config.route53.domain, run.ctx.lab)
    for rtype in ("A", "AAAA") if zone else ():
        record = find_record(r53, zone["Id"], record_name(run.config), rtype)
        why = record and _foreign(run, record)
        if why:
            run.emit("note", f"{why}: left alone")
        elif record:
            remove_record(run, zone["Id"], record, "alias to the distribution")


# ---------------------------------------------------------------- origin access control


def _create_oac(run: StepRun, name: str) -> Resource:
    created = run.client(ORIGIN_ACCESS_CONTROL).create_origin_access_control(
        OriginAccessControlConfig={
            "Name": name,
            "Description": f"CloudFront reads the static bucket - {mark(run.ctx.lab, run.step)}",
            **OAC_SETTINGS,
        }
    )["OriginAccessControl"]
    return {"Id": created["Id"], **created["OriginAccessControlConfig"]}


def _oac_fixes(run: StepRun, oac: Resource) -> list[Fix]:
    wrong = sorted(k for k, v in OAC_SETTINGS.items() if oac.get(k) != v)
    if not wrong:
        return []
    cf = run.client(ORIGIN_ACCESS_CONTROL)

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


def desired_config(run: StepRun, api: dict, site: dict, oac_id: str, domain: dict) -> dict:
    """The config msctl manages (CallerReference apart: see _create_distribution)."""
    cfg = run.config.cloudfront
    aliases: dict = {"Quantity": 0}
    viewer: dict = {"CloudFrontDefaultCertificate": True}
    if domain:
        aliases = {"Quantity": 1, "Items": [domain["fqdn"]]}
        viewer = {
            "CloudFrontDefaultCertificate": False,
            "ACMCertificateArn": domain["certificate_arn"],
            "SSLSupportMethod": SSL_SUPPORT,
            "MinimumProtocolVersion": MIN_TLS,
        }
    return {
        "Aliases": aliases,
        "ViewerCertificate": viewer,
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


def managed_view(config: dict, local: bool) -> dict:
    """The top-level fields msctl manages, normalized so a desired and a live config compare
    equal. Everything else (Logging, ...) is kept as it is on update."""
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
    viewer = config.get("ViewerCertificate") or {}
    cert = [viewer.get(k) or "" for k in ("ACMCertificateArn", "IAMCertificateId")]
    cert += [viewer.get("SSLSupportMethod"), viewer.get("MinimumProtocolVersion")]
    return {
        "Aliases": sorted((config.get("Aliases") or {}).get("Items") or []),
        "ViewerCertificate": cert if any(cert[:2]) else "default",
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


def _create_distribution(run: StepRun, name: str, desired: dict) -> Resource:
    # A new CallerReference per create: CloudFront refuses one it has ever seen (even from a
    # deleted distribution). The distribution is found by its tags, never by this.
    config = {**desired, "CallerReference": f"msctl-{run.ctx.lab}-{uuid.uuid4().hex}"}
    return run.client(DISTRIBUTION).create_distribution_with_tags(
        DistributionConfigWithTags={
            "DistributionConfig": config,
            "Tags": {"Items": as_list(run.tags(name))},
        }
    )["Distribution"]


def _distribution_fixes(run: StepRun, dist: Resource, desired: dict) -> list[Fix]:
    cf = run.client(DISTRIBUTION)
    dist_id = dist["Id"]
    live = cf.get_distribution_config(Id=dist_id)["DistributionConfig"]
    local = run.ctx.target.is_local
    have, want = managed_view(live, local), managed_view(desired, local)
    differing = [k for k in want if have[k] != want[k]]

    def update() -> None:
        current = cf.get_distribution_config(Id=dist_id)
        merged = copy.deepcopy(current["DistributionConfig"])
        merged.update({k: copy.deepcopy(desired[k]) for k in want})
        cf.update_distribution(Id=dist_id, IfMatch=current["ETag"], DistributionConfig=merged)

    return [Fix(", ".join(differing) + " differ", update)] if differing else []


# ---------------------------------------------------------------- the bucket policy


def _bucket_policy(run: StepRun, site: dict, dist_arn: str) -> None:
    """The statement that lets this distribution read the site (a "create" under plan while
    the distribution or the bucket is yet to be made)."""
    s3 = run.clients.s3
    bucket = site["bucket"]
    wanted = policy_statements(site["bucket_arn"], dist_arn)
    pending = is_pending(bucket, dist_arn)
    current = {} if pending else bucket_policy(s3, bucket) or {}
    ours = [s for s in current.get("Statement", []) if s.get("Sid") in OUR_SIDS]
    run.setting(
        "bucket-policy",
        f"{bucket} CloudFront read",
        ok=not pending and canonical(ours) == canonical(wanted),
        detail=f"GetObject for {dist_arn} only",
        action="create" if not ours else "update",
        apply=lambda: _merge_policy(s3, bucket, wanted),
    )


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
