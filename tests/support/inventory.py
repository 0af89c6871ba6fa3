"""What of a lab exists, asked of each service directly (not through msctl's own lookups).

`inventory(client, config)` lists every live resource of the lab by kind and logical name
(the `msctl:name` tag, or the resource's unique name where it has no tags):
``{kind: {name: [id, ...]}}``. Two ids under one name are a duplicate; anything listed after
`down` is left over. `client(service)` builds a boto3 client for the endpoint to inspect
(moto in-process, or a moto server).

Live means what would still cost or block: NAT gateways pending/available, ECS clusters and
services ACTIVE (or DRAINING), task definition revisions ACTIVE, DB instances not deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from msctl.aws.tags import LAB, NAME, as_dict

Inventory = dict[str, dict[str, list[str]]]

EC2_KINDS = {
    "vpc": ("describe_vpcs", "Vpcs", "VpcId"),
    "subnet": ("describe_subnets", "Subnets", "SubnetId"),
    "internet-gateway": ("describe_internet_gateways", "InternetGateways", "InternetGatewayId"),
    "route-table": ("describe_route_tables", "RouteTables", "RouteTableId"),
    "security-group": ("describe_security_groups", "SecurityGroups", "GroupId"),
    "elastic-ip": ("describe_addresses", "Addresses", "AllocationId"),
}


def inventory(client: Callable[[str], Any], config) -> Inventory:
    lab = config.lab
    found: Inventory = {}

    def add(kind: str, name: str, ident: str) -> None:
        found.setdefault(kind, {}).setdefault(name, []).append(ident)

    def lab_name(tags: dict[str, str], fallback: str) -> str | None:
        """The logical name of one of this lab's resources; None if it isn't the lab's."""
        if tags.get(LAB) != lab:
            return None
        return tags.get(NAME) or fallback

    # --- EC2
    ec2 = client("ec2")
    lab_filter = [{"Name": f"tag:{LAB}", "Values": [lab]}]
    for kind, (call, key, id_key) in EC2_KINDS.items():
        for item in getattr(ec2, call)(Filters=lab_filter)[key]:
            add(kind, as_dict(item.get("Tags")).get(NAME, "?"), item[id_key])
    # moto ignores the tag filter of DescribeNatGateways: tags and state checked here.
    for nat in ec2.describe_nat_gateways()["NatGateways"]:
        tags = as_dict(nat.get("Tags"))
        if tags.get(LAB) == lab and nat.get("State") in ("pending", "available"):
            add("nat-gateway", tags.get(NAME, "?"), nat["NatGatewayId"])

    # --- DynamoDB
    ddb = client("dynamodb")
    for table in ddb.list_tables()["TableNames"]:
        described = ddb.describe_table(TableName=table)["Table"]
        tags = as_dict(ddb.list_tags_of_resource(ResourceArn=described["TableArn"]).get("Tags"))
        name = lab_name(tags, table)
        if name and described.get("TableStatus") != "DELETING":
            add("table", name, table)

    # --- S3
    s3 = client("s3")
    for bucket in s3.list_buckets().get("Buckets", []):
        if bucket["Name"].startswith(f"{config.s3.bucket_prefix}-"):
            try:
                tags = as_dict(s3.get_bucket_tagging(Bucket=bucket["Name"]).get("TagSet"))
            except ClientError:
                tags = {LAB: lab}  # untagged but named like the lab's: count it
            name = lab_name(tags, bucket["Name"])
            if name:
                add("bucket", name, bucket["Name"])

    # --- RDS
    rds = client("rds")
    for db in rds.describe_db_instances()["DBInstances"]:
        name = lab_name(as_dict(db.get("TagList")), db["DBInstanceIdentifier"])
        if name and db.get("DBInstanceStatus") != "deleted":
            add("db-instance", name, db["DBInstanceIdentifier"])
    for group in rds.describe_db_subnet_groups()["DBSubnetGroups"]:
        if group["DBSubnetGroupName"] == config.rds.subnet_group:
            add("db-subnet-group", group["DBSubnetGroupName"], group["DBSubnetGroupName"])

    # --- IAM
    iam = client("iam")
    for role in iam.list_roles()["Roles"]:
        tags = as_dict(iam.list_role_tags(RoleName=role["RoleName"]).get("Tags"))
        name = lab_name(tags, role["RoleName"])
        if name:
            add("role", name, role["RoleName"])

    # --- Lambda
    lam = client("lambda")
    for fn in lam.list_functions()["Functions"]:
        tags = lam.list_tags(Resource=fn["FunctionArn"]).get("Tags") or {}
        name = lab_name(tags, fn["FunctionName"])
        if name:
            add("function", name, fn["FunctionName"])

    # --- ECR
    ecr = client("ecr")
    for repo in ecr.describe_repositories()["repositories"]:
        tags = as_dict(ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"]).get("tags"))
        name = lab_name(tags, repo["repositoryName"])
        if name:
            add("repository", name, repo["repositoryName"])

    # --- ELBv2
    elb = client("elbv2")
    lbs = elb.describe_load_balancers()["LoadBalancers"]
    tgs = elb.describe_target_groups()["TargetGroups"]
    for kind, items, arn_key, name_key in (
        ("load-balancer", lbs, "LoadBalancerArn", "LoadBalancerName"),
        ("target-group", tgs, "TargetGroupArn", "TargetGroupName"),
    ):
        for item in items:
            described = elb.describe_tags(ResourceArns=[item[arn_key]])["TagDescriptions"]
            tags = as_dict(described[0].get("Tags")) if described else {}
            name = lab_name(tags, item[name_key])
            if name:
                add(kind, name, item[arn_key])

    # --- ECS (clusters and services ACTIVE; task definition revisions ACTIVE)
    ecs = client("ecs")
    cluster_arns = ecs.list_clusters()["clusterArns"]
    clusters = (
        ecs.describe_clusters(clusters=cluster_arns, include=["TAGS"])["clusters"]
        if cluster_arns
        else []
    )
    for cluster in clusters:
        tags = {t["key"]: t["value"] for t in cluster.get("tags") or []}
        if cluster.get("status") != "ACTIVE" or lab_name(tags, "") is None:
            continue
        add("cluster", tags.get(NAME) or cluster["clusterName"], cluster["clusterArn"])
        arns = ecs.list_services(cluster=cluster["clusterArn"])["serviceArns"]
        for first in range(0, len(arns), 10):
            described = ecs.describe_services(
                cluster=cluster["clusterArn"], services=arns[first : first + 10]
            )["services"]
            for svc in described:
                if svc.get("status") in ("ACTIVE", "DRAINING"):
                    add("service", svc["serviceName"], svc["serviceArn"])
    for svc in config.ecs.services.values():
        for arn in ecs.list_task_definitions(familyPrefix=svc.family, status="ACTIVE")[
            "taskDefinitionArns"
        ]:
            if arn.rsplit("/", 1)[-1].rsplit(":", 1)[0] == svc.family:
                add("task-definition", svc.family, arn)

    # --- CloudWatch Logs (msctl creates and tags every group its lab writes to)
    logs = client("logs")
    for group in logs.describe_log_groups()["logGroups"]:
        tags = logs.list_tags_log_group(logGroupName=group["logGroupName"]).get("tags") or {}
        name = lab_name(tags, group["logGroupName"])
        if name:
            add("log-group", name, group["logGroupName"])

    # --- API Gateway (tags come with the list)
    apigw = client("apigateway")
    for api in apigw.get_rest_apis(limit=500)["items"]:
        name = lab_name(api.get("tags") or {}, api["name"])
        if name:
            add("rest-api", name, api["id"])

    # --- CloudFront (distributions by tag; the OAC by its name: it can't be tagged)
    cf = client("cloudfront")
    for item in (cf.list_distributions().get("DistributionList") or {}).get("Items") or []:
        tags = as_dict(cf.list_tags_for_resource(Resource=item["ARN"])["Tags"].get("Items"))
        name = lab_name(tags, item["Id"])
        if name:
            add("distribution", name, item["Id"])
    oacs = (cf.list_origin_access_controls().get("OriginAccessControlList") or {}).get(
        "Items"
    ) or []
    for oac in oacs:
        if oac["Name"] == f"{lab}-static-oac":
            add("origin-access-control", oac["Name"], oac["Id"])

    # --- Application Auto Scaling (targets can't be found by tag in moto: by resource id)
    aas = client("application-autoscaling")
    prefix = f"service/{config.ecs.cluster}/"
    for target in aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]:
        if target["ResourceId"].startswith(prefix):
            add("scalable-target", target["ResourceId"], target["ResourceId"])

    # --- CloudWatch and SNS (the cloudwatch step)
    cw = client("cloudwatch")
    for alarm in cw.describe_alarms()["MetricAlarms"]:
        tags = as_dict(cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"]).get("Tags"))
        name = lab_name(tags, alarm["AlarmName"])
        if name:
            add("alarm", name, alarm["AlarmName"])
    for dashboard in cw.list_dashboards()["DashboardEntries"]:
        if dashboard["DashboardName"] == config.cloudwatch.dashboard:
            add("dashboard", dashboard["DashboardName"], dashboard["DashboardName"])
    sns = client("sns")
    for topic in sns.list_topics()["Topics"]:
        tags = as_dict(sns.list_tags_for_resource(ResourceArn=topic["TopicArn"]).get("Tags"))
        name = lab_name(tags, topic["TopicArn"])
        if name:
            add("sns-topic", name, topic["TopicArn"])

    # --- Route 53 and ACM (the route53 step, when the config names a domain)
    domain = config.route53.domain
    if domain:
        r53 = client("route53")
        for zone in r53.list_hosted_zones()["HostedZones"]:
            if zone["Name"].rstrip(".") == domain.rstrip("."):
                add("hosted-zone", domain, zone["Id"])
        acm = client("acm")
        for cert in acm.list_certificates()["CertificateSummaryList"]:
            arn = cert["CertificateArn"]
            tags = as_dict(acm.list_tags_for_certificate(CertificateArn=arn).get("Tags"))
            name = lab_name(tags, cert["DomainName"])
            if name:
                add("certificate", name, arn)
    return found


def duplicates(found: Inventory) -> dict[str, dict[str, list[str]]]:
    """Every logical name that more than one live resource answers to."""
    dups: dict[str, dict[str, list[str]]] = {}
    for kind, names in found.items():
        for name, ids in names.items():
            if len(ids) > 1:
                dups.setdefault(kind, {})[name] = ids
    return dups


def count(found: Inventory) -> int:
    return sum(len(ids) for names in found.values() for ids in names.values())
