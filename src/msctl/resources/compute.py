"""IAM roles, Lambda functions, log groups, ECR repositories, load balancers and target
groups."""

from __future__ import annotations

from .. import costs
from ..aws.tags import as_dict
from ..aws.waiters import Wait
from .base import Kind, Resource, absent, first

ROLE_DELETE_CONFLICT_TIMEOUT = 60  # a role just stripped of its policies may answer DeleteConflict
LB_DELETE_TIMEOUT = 600
LB_DELETE_EXPECTED = 90  # seconds, typically, on AWS (0.5-2.5 min)
TG_IN_USE_TIMEOUT = 300  # a target group stays in use for a moment after its load balancer


class Role(Kind):
    name = "iam-role"
    service = "iam"
    id_key = name_key = "RoleName"
    arn_key = "Arn"
    missing = ("NoSuchEntity",)
    tagging_type = "iam:role"
    scanned = True

    def describe(self, client, ident: str) -> Resource | None:
        return client.get_role(RoleName=ident)["Role"]

    def tags(self, client, resource: Resource) -> dict[str, str]:
        if "Tags" in resource:  # GetRole answers with them; ListRoles doesn't
            return as_dict(resource["Tags"])
        paged = client.get_paginator("list_role_tags").paginate(RoleName=resource["RoleName"])
        return as_dict([t for page in paged for t in page.get("Tags", [])])

    def id_from_arn(self, arn: str) -> str:
        return arn.rsplit("/", 1)[-1]

    def scan(self, client, lab: str):
        for page in client.get_paginator("list_roles").paginate():
            yield from page.get("Roles", [])

    def keep(self, run, resource: Resource) -> str:
        current = run.clients.apigateway.get_account().get("cloudwatchRoleArn") or ""
        if current and current == resource.get("Arn"):
            return (
                "this region's API Gateway account setting names it: every REST API in the "
                "account and region logs through it"
            )
        return ""

    def delete(self, run, resource: Resource) -> None:
        """AWS refuses to delete a role that still has policies or instance profiles."""
        iam = self.client(run.ctx)
        name = resource["RoleName"]
        for page in iam.get_paginator("list_attached_role_policies").paginate(RoleName=name):
            for attached in page["AttachedPolicies"]:
                iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
        for page in iam.get_paginator("list_role_policies").paginate(RoleName=name):
            for policy in page["PolicyNames"]:
                iam.delete_role_policy(RoleName=name, PolicyName=policy)
        for profile in iam.list_instance_profiles_for_role(RoleName=name)["InstanceProfiles"]:
            iam.remove_role_from_instance_profile(
                InstanceProfileName=profile["InstanceProfileName"], RoleName=name
            )
        run.retry(
            lambda: iam.delete_role(RoleName=name),
            codes=("DeleteConflict",),
            timeout=ROLE_DELETE_CONFLICT_TIMEOUT,
            reason="IAM is still removing the role's detached policies",
        )


class Function(Kind):
    name = "lambda-function"
    service = "lambda"
    id_key = name_key = "FunctionName"
    arn_key = "FunctionArn"
    tagging_type = "lambda:function"

    def describe(self, client, ident: str) -> Resource | None:
        found = client.get_function(FunctionName=ident)
        return {**found["Configuration"], "Tags": found.get("Tags") or {}}

    def tags(self, client, resource: Resource) -> dict[str, str]:
        if "Tags" in resource:
            return dict(resource["Tags"])
        return client.list_tags(Resource=resource["FunctionArn"]).get("Tags") or {}

    def id_from_arn(self, arn: str) -> str:
        return arn.split(":")[6]

    def delete(self, run, resource: Resource) -> None:
        lam = self.client(run.ctx)
        absent(lambda: lam.delete_function(FunctionName=resource["FunctionName"]))


class LogGroup(Kind):
    name = "log-group"
    service = "logs"
    id_key = name_key = "logGroupName"
    tagging_type = "logs:log-group"

    def describe(self, client, ident: str) -> Resource | None:
        groups = client.describe_log_groups(logGroupNamePrefix=ident)["logGroups"]
        return next((g for g in groups if g["logGroupName"] == ident), None)

    def tags(self, client, resource: Resource) -> dict[str, str]:
        name = resource["logGroupName"]
        return client.list_tags_log_group(logGroupName=name).get("tags") or {}

    def id_from_arn(self, arn: str) -> str:
        return arn.split(":", 6)[6].removesuffix(":*")

    def delete(self, run, resource: Resource) -> None:
        logs = self.client(run.ctx)
        absent(lambda: logs.delete_log_group(logGroupName=resource["logGroupName"]))


class Repository(Kind):
    name = "ecr-repository"
    service = "ecr"
    id_key = name_key = "repositoryName"
    arn_key = "repositoryArn"
    missing = ("RepositoryNotFoundException",)
    tagging_type = "ecr:repository"
    scanned = True

    def describe(self, client, ident: str) -> Resource | None:
        return first(client.describe_repositories(repositoryNames=[ident])["repositories"])

    def tags(self, client, resource: Resource) -> dict[str, str]:
        listed = client.list_tags_for_resource(resourceArn=resource["repositoryArn"])
        return as_dict(listed.get("tags"))

    def scan(self, client, lab: str):
        for page in client.get_paginator("describe_repositories").paginate():
            yield from page.get("repositories", [])

    def delete(self, run, resource: Resource) -> None:
        # force: a repository holding images can't be deleted otherwise.
        self.client(run.ctx).delete_repository(
            repositoryName=resource["repositoryName"], force=True
        )


class ElbKind(Kind):
    service = "elbv2"

    def tags(self, client, resource: Resource) -> dict[str, str]:
        described = client.describe_tags(ResourceArns=[self.ident(resource)])["TagDescriptions"]
        return as_dict(described[0].get("Tags")) if described else {}


class LoadBalancer(ElbKind):
    name = "load-balancer"
    id_key = arn_key = "LoadBalancerArn"
    name_key = "LoadBalancerName"
    missing = ("LoadBalancerNotFound",)
    tagging_type = "elasticloadbalancing:loadbalancer"
    hourly = costs.ALB + 2 * costs.PUBLIC_IPV4

    def describe(self, client, ident: str) -> Resource | None:
        key = "LoadBalancerArns" if ident.startswith("arn:") else "Names"
        return first(client.describe_load_balancers(**{key: [ident]})["LoadBalancers"])

    def delete(self, run, resource: Resource) -> Wait:
        """Its listeners and their rules go with it; then (returned) the wait until it is
        gone."""
        elb = self.client(run.ctx)
        arn = resource["LoadBalancerArn"]
        elb.delete_load_balancer(LoadBalancerArn=arn)

        def gone() -> tuple[bool, str]:
            found = absent(lambda: self.describe(elb, arn), self.missing)
            return found is None, (found or {}).get("State", {}).get("Code", "deleted")

        label = resource.get("LoadBalancerName", arn)
        return Wait(
            f"load balancer {label} to be deleted", gone, LB_DELETE_TIMEOUT, LB_DELETE_EXPECTED
        )


class TargetGroup(ElbKind):
    name = "target-group"
    id_key = arn_key = "TargetGroupArn"
    name_key = "TargetGroupName"
    missing = ("TargetGroupNotFound",)
    tagging_type = "elasticloadbalancing:targetgroup"

    def describe(self, client, ident: str) -> Resource | None:
        key = "TargetGroupArns" if ident.startswith("arn:") else "Names"
        return first(client.describe_target_groups(**{key: [ident]})["TargetGroups"])

    def delete(self, run, resource: Resource) -> None:
        elb = self.client(run.ctx)
        run.retry(
            lambda: elb.delete_target_group(TargetGroupArn=resource["TargetGroupArn"]),
            codes=("ResourceInUse",),
            timeout=TG_IN_USE_TIMEOUT,
            reason="a deleted load balancer still references the target group",
        )


ROLE = Role()
FUNCTION = Function()
LOG_GROUP = LogGroup()
REPOSITORY = Repository()
LOAD_BALANCER = LoadBalancer()
TARGET_GROUP = TargetGroup()
