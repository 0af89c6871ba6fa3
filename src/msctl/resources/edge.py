"""The edge: REST APIs, CloudFront distributions and origin access controls, ACM
certificates, Route 53 hosted zones.

CloudFront is global and its certificates live in ACM in us-east-1, whatever the lab's
region. An origin access control can't be tagged: the lab's carry `mark()` in their
description. A hosted zone is the lab's only if msctl created it (the route53 step uses a
zone the domain already has without ever deleting it).
"""

from __future__ import annotations

from .. import costs
from ..aws.tags import LAB, NAME, as_dict
from ..engine.step import StepError
from .base import Kind, Resource, marked, only_one, pages

GLOBAL_REGION = "us-east-1"  # CloudFront, and the ACM certificates CloudFront uses
DEPLOY_TIMEOUT = 2400  # CloudFront deploys in ~3.5 min, historically 15-40
DEPLOY_EXPECTED = 210  # seconds, typically, on AWS
DISTRIBUTION_DELETE_TIMEOUT = 900
OAC_IN_USE_TIMEOUT = 300
CERT_RELEASE_TIMEOUT = 600  # CloudFront releases a certificate once its update has deployed
APIGW_TURN_TIMEOUT = 900  # a class of labs at once, each waiting its 30-s DeleteRestApi turn
CERT_STATUSES = [
    "PENDING_VALIDATION",
    "ISSUED",
    "INACTIVE",
    "EXPIRED",
    "VALIDATION_TIMED_OUT",
    "REVOKED",
    "FAILED",
]
CREATED = "msctl:created"  # on a hosted zone msctl created (the only kind it deletes)


class RestApi(Kind):
    """REST API names aren't unique: the lab's is found by its name and the lab's tag."""

    name = "rest-api"
    service = "apigateway"
    id_key = "id"
    name_key = "name"
    tagging_type = "apigateway:restapis"
    scanned = True

    def describe(self, client, ident: str) -> Resource | None:
        return client.get_rest_api(restApiId=ident)

    def tags(self, client, resource: Resource) -> dict[str, str]:
        return dict(resource.get("tags") or {})  # the server 404s GetTags; the API has them

    def scan(self, client, lab: str):
        pages_ = client.get_paginator("get_rest_apis").paginate(PaginationConfig={"PageSize": 500})
        for page in pages_:
            yield from page.get("items", [])

    def find(self, client, name: str, lab: str) -> Resource | None:
        found = [
            api
            for api in self.scan(client, lab)
            if api.get("name") == name and self.tags(client, api).get(LAB) == lab
        ]
        return only_one(found, f"REST APIs named {name}")

    def delete(self, run, resource: Resource) -> None:
        # API Gateway takes one DeleteRestApi per 30 s in an account, which botocore's retries
        # don't always outlast (boto3#876), and other labs may be going at the same time.
        apigw = self.client(run.ctx)
        taking_turns(run, "DeleteRestApi", lambda: apigw.delete_rest_api(restApiId=resource["id"]))


def taking_turns(run, operation: str, call):
    """An API Gateway call with a fixed per-account rate (DeleteRestApi 1 per 30 s,
    CreateRestApi 1 per 3 s, CreateDeployment 1 per 5 s), retried until its turn comes:
    botocore's retries don't always outlast it (boto3#876), and other labs may be at it too."""
    return run.retry(
        call,
        codes=("TooManyRequestsException",),
        timeout=APIGW_TURN_TIMEOUT,
        reason=f"API Gateway takes one {operation} at a time in an account",
    )


def deployed(cf, dist_id: str) -> tuple[bool, str]:
    status = cf.get_distribution(Id=dist_id)["Distribution"]["Status"]
    return status == "Deployed", status


class Distribution(Kind):
    name = "distribution"
    service = "cloudfront"
    region = GLOBAL_REGION
    id_key = "Id"
    arn_key = "ARN"
    missing = ("NoSuchDistribution",)
    tagging_type = "cloudfront:distribution"

    def describe(self, client, ident: str) -> Resource | None:
        return client.get_distribution(Id=ident)["Distribution"]

    def tags(self, client, resource: Resource) -> dict[str, str]:
        listed = client.list_tags_for_resource(Resource=resource["ARN"])
        return as_dict(listed.get("Tags", {}).get("Items"))

    def id_from_arn(self, arn: str) -> str:
        return arn.rsplit("/", 1)[-1]

    def scan(self, client, lab: str):
        for page in client.get_paginator("list_distributions").paginate():
            yield from (page.get("DistributionList") or {}).get("Items") or []

    def find(self, client, name: str, lab: str) -> Resource | None:
        """By its tags (the list doesn't carry them: one read each)."""
        wanted = {LAB: lab, NAME: name}
        found = [
            d for d in self.scan(client, lab) if wanted.items() <= self.tags(client, d).items()
        ]
        return only_one(found, f"CloudFront distributions named {name}")

    def delete(self, run, resource: Resource) -> None:
        """Disable, wait until the disable has deployed, delete (DistributionNotDisabled is
        retried: it can come even right after Deployed)."""
        cf = self.client(run.ctx)
        dist_id = resource["Id"]
        current = cf.get_distribution_config(Id=dist_id)
        config = current["DistributionConfig"]
        if config.get("Enabled"):
            cf.update_distribution(
                Id=dist_id, IfMatch=current["ETag"], DistributionConfig={**config, "Enabled": False}
            )
        run.wait(
            f"distribution {dist_id} to deploy its disable",
            lambda: deployed(cf, dist_id),
            timeout=DEPLOY_TIMEOUT,
            expected=DEPLOY_EXPECTED,
        )
        run.retry(
            # Each attempt with the current ETag (PreconditionFailed: it changed meanwhile).
            lambda: cf.delete_distribution(
                Id=dist_id, IfMatch=cf.get_distribution(Id=dist_id)["ETag"]
            ),
            codes=("DistributionNotDisabled", "PreconditionFailed"),
            timeout=DISTRIBUTION_DELETE_TIMEOUT,
            reason="the disabled distribution is still being removed from the edge",
        )


class OriginAccessControl(Kind):
    """Untaggable: ownership is the mark in its description. Names are unique."""

    name = "origin-access-control"
    service = "cloudfront"
    region = GLOBAL_REGION
    id_key = "Id"
    name_key = "Name"
    missing = ("NoSuchOriginAccessControl",)
    scanned = True

    def describe(self, client, ident: str) -> Resource | None:
        found = client.get_origin_access_control(Id=ident)["OriginAccessControl"]
        return {"Id": found["Id"], **found["OriginAccessControlConfig"]}

    def tags(self, client, resource: Resource) -> dict[str, str]:
        return marked(resource.get("Description"))

    def scan(self, client, lab: str):
        for page in client.get_paginator("list_origin_access_controls").paginate():
            yield from (page.get("OriginAccessControlList") or {}).get("Items") or []

    def find(self, client, name: str, lab: str) -> Resource | None:
        found = [o for o in self.scan(client, lab) if o.get("Name") == name]
        return only_one(found, f"origin access controls named {name}")

    def delete(self, run, resource: Resource) -> None:
        cf = self.client(run.ctx)
        oac_id = resource["Id"]
        run.retry(
            lambda: cf.delete_origin_access_control(
                Id=oac_id, IfMatch=cf.get_origin_access_control(Id=oac_id)["ETag"]
            ),
            codes=("OriginAccessControlInUse", "PreconditionFailed"),
            timeout=OAC_IN_USE_TIMEOUT,
            reason="a deleted distribution still holds the origin access control",
        )


class Certificate(Kind):
    """Found by its domain name and the lab's tag (a domain can have many certificates)."""

    name = "certificate"
    service = "acm"
    region = GLOBAL_REGION
    id_key = arn_key = "CertificateArn"
    name_key = "DomainName"
    tagging_type = "acm:certificate"

    def describe(self, client, ident: str) -> Resource | None:
        return client.describe_certificate(CertificateArn=ident)["Certificate"]

    def tags(self, client, resource: Resource) -> dict[str, str]:
        listed = client.list_tags_for_certificate(CertificateArn=resource["CertificateArn"])
        return as_dict(listed.get("Tags"))

    def scan(self, client, lab: str):
        return pages(
            client.list_certificates,
            "CertificateSummaryList",
            CertificateStatuses=CERT_STATUSES,
        )

    def find(self, client, name: str, lab: str) -> Resource | None:
        found = [
            c
            for c in self.scan(client, lab)
            if c.get("DomainName", "").rstrip(".").lower() == name.rstrip(".").lower()
            and self.tags(client, c).get(LAB) == lab
        ]
        return only_one(found, f"ACM certificates for {name}")

    def delete(self, run, resource: Resource) -> None:
        acm = self.client(run.ctx)
        run.retry(
            lambda: acm.delete_certificate(CertificateArn=resource["CertificateArn"]),
            codes=("ResourceInUseException",),
            timeout=CERT_RELEASE_TIMEOUT,
            reason="CloudFront releases the certificate once its update has deployed",
        )


class HostedZone(Kind):
    name = "hosted-zone"
    service = "route53"
    id_key = "Id"
    name_key = "Name"
    missing = ("NoSuchHostedZone",)
    tagging_type = "route53:hostedzone"
    scanned = True
    hourly = costs.HOSTED_ZONE_MONTH / costs.HOURS_PER_MONTH

    def describe(self, client, ident: str) -> Resource | None:
        zone = client.get_hosted_zone(Id=ident)["HostedZone"]
        return {**zone, "Id": zone["Id"].split("/")[-1]}

    def ident(self, resource: Resource) -> str:
        return resource["Id"].split("/")[-1]

    def tags(self, client, resource: Resource) -> dict[str, str]:
        listed = client.list_tags_for_resource(
            ResourceType="hostedzone", ResourceId=self.ident(resource)
        )
        tags = as_dict(listed["ResourceTagSet"].get("Tags"))
        # Only a zone msctl created is the lab's: one it merely used is never tagged.
        return tags if tags.get(CREATED) == "true" else {}

    def scan(self, client, lab: str):
        for page in client.get_paginator("list_hosted_zones").paginate():
            yield from page.get("HostedZones", [])

    def find(self, client, name: str, lab: str) -> Resource | None:
        """The domain's public zone, whoever made it (the route53 step uses one it didn't)."""
        wanted = name.rstrip(".").lower()
        listed = client.list_hosted_zones_by_name(DNSName=wanted, MaxItems="100")
        found = [
            {**z, "Id": self.ident(z)}
            for z in listed.get("HostedZones", [])
            if z["Name"].rstrip(".").lower() == wanted
            and not (z.get("Config") or {}).get("PrivateZone")
        ]
        return only_one(found, f"public hosted zones for {name}")

    def label(self, resource: Resource, tags: dict[str, str]) -> str:
        return resource.get("Name", "").rstrip(".")

    def delete(self, run, resource: Resource) -> None:
        """Refused while the zone holds records msctl didn't make."""
        r53 = self.client(run.ctx)
        zone_id = self.ident(resource)
        left = [
            f"{r['Name']} {r['Type']}"
            for page in r53.get_paginator("list_resource_record_sets").paginate(
                HostedZoneId=zone_id
            )
            for r in page["ResourceRecordSets"]
            if r["Type"] not in ("NS", "SOA")
        ]
        if left:
            raise StepError(
                f"hosted zone {resource.get('Name')} (created by msctl) still has records msctl "
                f"didn't make: {', '.join(left)}",
                hint="delete those records (or the zone) yourself, or keep the zone and remove "
                f"its {CREATED} tag, then run `msctl down` again",
            )
        r53.delete_hosted_zone(Id=zone_id)


REST_API = RestApi()
DISTRIBUTION = Distribution()
ORIGIN_ACCESS_CONTROL = OriginAccessControl()
CERTIFICATE = Certificate()
HOSTED_ZONE = HostedZone()
