"""rds: the DB subnet group and the PostgreSQL instance (seed 2.2).

The master password is never chosen, seen or stored by msctl: RDS manages it in Secrets
Manager (ManageMasterUserPassword) and msctl records only the secret's ARN.

RDS takes 5-8 minutes to create an instance on AWS. `apply` starts the create and returns,
so that IAM and Lambda don't wait for it; the ecs step calls `wait_available` when it needs
the endpoint.
"""

from __future__ import annotations

import datetime
import re

from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from ..aws.errors import is_code
from ..aws.tags import LAB, as_dict, as_list
from ..engine.model import Check, Pending
from ..engine.step import Fix, NotSupported, Resource, Step, StepError, StepRun

ENGINE = "postgres"
DEFAULT_PORT = 5432
BACKUP_RETENTION_DAYS = 1
# Create 5-8.5 min, delete 2-3 min (sometimes 10); generous bounds, polled every few seconds.
INSTANCE_TIMEOUT = 1800
# A subnet group can't be deleted while its instance is still being deleted.
SUBNET_GROUP_DELETE_TIMEOUT = 600

# Statuses in which the instance can't serve and won't recover on its own.
FAILED_STATES = {
    "failed",
    "storage-full",
    "inaccessible-encryption-credentials",
    "inaccessible-encryption-credentials-recoverable",
    "restore-error",
    "stopped",
    "stopping",
    "deleting",
    "insufficient-capacity",
}
REBUILD_HINT = "run `msctl down --only rds` and `msctl up` to rebuild it, or restore the config"


class RdsStep(Step):
    name = "rds"
    requires = ("vpc", "sg")
    services = ("rds", "secretsmanager")
    description = "DB subnet group and PostgreSQL instance (password managed by RDS)"

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.rds
        rds = run.clients.rds
        lab = run.ctx.lab
        subnet_ids = list(run.outputs_of("vpc")["private_subnet_ids"])
        sg_id = run.outputs_of("sg")["group_ids"][cfg.security_group]

        group = run.ensure(
            "db-subnet-group",
            cfg.subnet_group,
            id_key="DBSubnetGroupName",
            arn_key="DBSubnetGroupArn",
            after=subnet_ids,
            find=lambda: find_subnet_group(rds, lab, cfg.subnet_group),
            create=lambda: rds.create_db_subnet_group(
                DBSubnetGroupName=cfg.subnet_group,
                DBSubnetGroupDescription=_subnet_group_description(lab),
                SubnetIds=subnet_ids,
                Tags=as_list(run.tags(cfg.subnet_group)),
            )["DBSubnetGroup"],
            fixes=lambda found: _subnet_group_fixes(run, found, subnet_ids),
        )

        existing = find_instance(rds, lab, cfg.identifier)
        if existing is not None and existing.get("DBInstanceStatus") == "deleting":
            raise StepError(
                f"DB instance {cfg.identifier} is being deleted",
                hint="run `msctl down --only rds` to wait until it is gone, then `msctl up`",
            )
        # Resolved only when a create is coming: a re-run never "upgrades" to a newer minor.
        version = resolve_engine_version(run, cfg.engine_version) if existing is None else None
        created: list[Resource] = []

        def create() -> Resource:
            instance = _create_instance(run, version, sg_id)
            created.append(instance)
            return instance

        run.ensure(
            "db-instance",
            cfg.identifier,
            id_key="DBInstanceIdentifier",
            arn_key="DBInstanceArn",
            after=[group, sg_id],
            find=lambda: existing,
            create=create,
            # The create call carried every setting: a just-created instance is as configured
            # (and can't be modified while it is still creating).
            fixes=lambda inst: [] if created else _instance_fixes(run, inst, sg_id),
        )

        instance = created[0] if created else existing
        if instance is not None and not run.dry_run:
            instance = find_instance(rds, lab, cfg.identifier) or instance
        return _outputs(cfg, instance)

    def verify(self, run: StepRun) -> list[Check]:
        checks = super().verify(run)
        cfg = run.config.rds
        instance = find_instance(run.clients.rds, run.ctx.lab, cfg.identifier)
        if instance is None:
            return checks  # the default checks already report it missing
        checks.append(_status_check(cfg.identifier, instance))
        checks.append(_secret_check(run, cfg.identifier, instance))
        return checks

    def teardown(self, run: StepRun) -> None:
        cfg = run.config.rds
        rds = run.clients.rds
        lab = run.ctx.lab
        instance = find_instance(rds, lab, cfg.identifier)
        if instance is not None and instance.get("DeletionProtection"):
            if cfg.deletion_protection:
                raise StepError(
                    f"DB instance {cfg.identifier} has deletion protection on, and the config "
                    "(rds.deletion_protection: true) keeps it on",
                    hint="to delete it, run the command again with "
                    "`--set rds.deletion_protection=false`",
                )
            run.setting(
                "db-instance",
                f"{cfg.identifier} deletion protection",
                ok=False,
                detail="turn off before deleting (rds.deletion_protection is false)",
                apply=lambda: modify_instance(run, cfg.identifier, DeletionProtection=False),
            )
        run.remove(
            "db-instance",
            cfg.identifier,
            find=lambda: instance,
            delete=lambda found: _delete_instance(run, found),
        )
        run.remove(
            "db-subnet-group",
            cfg.subnet_group,
            find=lambda: find_subnet_group(rds, lab, cfg.subnet_group),
            delete=lambda _group: run.retry(
                lambda: rds.delete_db_subnet_group(DBSubnetGroupName=cfg.subnet_group),
                codes=("InvalidDBSubnetGroupStateFault",),
                timeout=SUBNET_GROUP_DELETE_TIMEOUT,
                reason="the DB instance using the subnet group is still being deleted",
            ),
        )


# ---------------------------------------------------------------- the endpoint, for ecs


def wait_available(run: StepRun, identifier: str, timeout: float = INSTANCE_TIMEOUT) -> dict:
    """Wait (short polls) until the instance is `available`; return {"address", "port"}.

    Under plan nothing is waited for: the endpoint is returned if the instance reports one,
    else a Pending placeholder.
    """
    rds = run.clients.rds
    lab = run.ctx.lab
    if run.dry_run:
        instance = find_instance(rds, lab, identifier)
        endpoint = (instance or {}).get("Endpoint") or {}
        return {
            "address": endpoint.get("Address") or Pending(f"endpoint of DB instance {identifier}"),
            "port": endpoint.get("Port") or DEFAULT_PORT,
        }
    seen: dict = {}

    def check() -> tuple[bool, str]:
        instance = find_instance(rds, lab, identifier)
        if instance is None:
            raise StepError(
                f"DB instance {identifier} not found",
                hint="run `msctl up --only rds` to create it",
            )
        status = instance.get("DBInstanceStatus", "unknown")
        if _failed(status):
            raise StepError(
                f"DB instance {identifier} is {status}; it won't become available on its own",
                hint=REBUILD_HINT,
            )
        endpoint = instance.get("Endpoint") or {}
        seen.update(endpoint)
        return status == "available" and bool(endpoint.get("Address")), status

    run.wait(f"DB instance {identifier} to be available", check, timeout=timeout)
    return {"address": seen["Address"], "port": seen.get("Port") or DEFAULT_PORT}


# ---------------------------------------------------------------- lookups


def find_instance(rds, lab: str, identifier: str) -> Resource | None:
    """The instance by its (account- and region-unique) identifier, if it is this lab's."""
    try:
        instances = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
    except ClientError as exc:
        if is_code(exc, "DBInstanceNotFound", "DBInstanceNotFoundFault"):
            return None
        raise
    if not instances:
        return None
    instance = instances[0]
    _check_owner(as_dict(instance.get("TagList")), lab, f"DB instance {identifier}")
    return instance


def find_subnet_group(rds, lab: str, name: str) -> Resource | None:
    try:
        groups = rds.describe_db_subnet_groups(DBSubnetGroupName=name)["DBSubnetGroups"]
    except ClientError as exc:
        if is_code(exc, "DBSubnetGroupNotFoundFault"):
            return None
        raise
    if not groups:
        return None
    group = groups[0]
    tags = rds.list_tags_for_resource(ResourceName=group["DBSubnetGroupArn"])["TagList"]
    _check_owner(as_dict(tags), lab, f"DB subnet group {name}")
    return group


def _check_owner(tags: dict[str, str], lab: str, what: str) -> None:
    """Names are unique in the account: one that isn't tagged for this lab isn't ours."""
    if tags.get(LAB) != lab:
        owner = f"lab {tags[LAB]!r}" if LAB in tags else "something outside msctl"
        raise StepError(
            f"{what} exists but belongs to {owner}, not to lab {lab!r}",
            hint="choose another name in the config's rds section, or remove that resource",
        )


# ---------------------------------------------------------------- engine version


def resolve_engine_version(run: StepRun, wanted: str) -> str:
    """An exact version ("15.4") as is; a major ("15") as the newest available 15.x."""
    if "." in wanted:
        return wanted
    rds = run.clients.rds
    try:
        pages = rds.get_paginator("describe_db_engine_versions").paginate(
            Engine=ENGINE, EngineVersion=wanted
        )
        offered = [v for page in pages for v in page.get("DBEngineVersions", [])]
    except (NotImplementedError, ResponseParserError, ClientError) as exc:
        if not (run.ctx.target.is_local and _not_implemented(exc)):
            raise
        # The emulator has no engine version catalogue. CreateDBInstance takes a major
        # version and lets RDS pick the minor; that is what is asked for here.
        run.emit(
            "note",
            f"the local emulator can't list {ENGINE} engine versions; creating with major "
            f"version {wanted} and letting the emulator pick the minor version",
        )
        return wanted
    candidates = [
        v["EngineVersion"]
        for v in offered
        if v.get("Engine", ENGINE) == ENGINE
        and v.get("EngineVersion", "").startswith(f"{wanted}.")
        and v.get("Status", "available") == "available"
    ]
    if not candidates:
        raise StepError(
            f"no available {ENGINE} {wanted}.x engine version in {run.clients.region}",
            hint=f"set an exact version, e.g. `--set rds.engine_version={wanted}.4`, or another "
            "major version (aws rds describe-db-engine-versions --engine postgres lists them)",
        )
    return max(candidates, key=version_key)


def version_key(version: str) -> tuple[int, ...]:
    """ "15.10" > "15.4": compare the numbers, not the text."""
    return tuple(int(n) for n in re.findall(r"\d+", version))


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def _not_implemented(exc: BaseException) -> bool:
    """How moto answers an action it lacks: NotImplementedError in-process, HTTP 500 as a
    server (an HTML page botocore can't parse)."""
    if isinstance(exc, NotImplementedError | ResponseParserError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or is_code(exc, "NotImplemented", "InternalFailure")
    return False


# ---------------------------------------------------------------- create and fix


def _subnet_group_description(lab: str) -> str:
    return f"msctl lab {lab}: private subnets for the database"


def _create_instance(run: StepRun, version: str, sg_id: str) -> Resource:
    cfg = run.config.rds
    return run.clients.rds.create_db_instance(
        DBInstanceIdentifier=cfg.identifier,
        DBInstanceClass=cfg.instance_class,
        Engine=ENGINE,
        EngineVersion=version,
        # A pinned exact version stays pinned; a major-only config takes minor upgrades.
        AutoMinorVersionUpgrade="." not in cfg.engine_version,
        AllocatedStorage=cfg.allocated_storage,
        StorageType=cfg.storage_type,
        StorageEncrypted=True,
        MasterUsername=cfg.master_username,
        ManageMasterUserPassword=True,
        DBName=cfg.db_name,
        DBSubnetGroupName=cfg.subnet_group,
        VpcSecurityGroupIds=[sg_id],
        PubliclyAccessible=False,
        DeletionProtection=cfg.deletion_protection,
        CopyTagsToSnapshot=True,
        BackupRetentionPeriod=BACKUP_RETENTION_DAYS,
        Tags=as_list(run.tags(cfg.identifier)),
    )["DBInstance"]


def _subnet_group_fixes(run: StepRun, group: Resource, subnet_ids: list[str]) -> list[Fix]:
    current = {s["SubnetIdentifier"] for s in group.get("Subnets", [])}
    if current == set(subnet_ids):
        return []
    name = group["DBSubnetGroupName"]

    def modify() -> None:
        if run.ctx.target.is_local:
            # moto 5.2 drops the subnet group from its store on ModifyDBSubnetGroup.
            raise NotSupported(
                f"the local emulator can't change DB subnet group {name}'s subnets "
                "(its ModifyDBSubnetGroup loses the group)"
            )
        run.clients.rds.modify_db_subnet_group(DBSubnetGroupName=name, SubnetIds=subnet_ids)

    return [Fix(f"subnets {sorted(current)} -> {sorted(subnet_ids)}", modify)]


def _instance_fixes(run: StepRun, inst: Resource, sg_id: str) -> list[Fix]:
    """Replacements (refused) first, then one ModifyDBInstance for everything in place."""
    cfg = run.config.rds
    # What an earlier apply already asked for counts as done.
    now = {**inst, **(inst.get("PendingModifiedValues") or {})}
    refuse: list[str] = []
    changes: dict = {}
    details: list[str] = []

    def fixed(key: str, value, detail: str) -> None:
        changes[key] = value
        details.append(detail)

    if now.get("Engine") != ENGINE:
        refuse.append(f"engine {now.get('Engine')} -> {ENGINE}")
    version = now.get("EngineVersion", "")
    wanted = cfg.engine_version
    if _major(version) != _major(wanted):
        refuse.append(f"engine version {version} -> {wanted} (major version change)")
    elif "." in wanted and version != wanted:
        if version_key(version) < version_key(wanted):
            fixed("EngineVersion", wanted, f"engine version {version} -> {wanted}")
        else:
            refuse.append(f"engine version {version} -> {wanted} (downgrade)")
    auto_minor = "." not in wanted
    if now.get("AutoMinorVersionUpgrade", auto_minor) != auto_minor:
        fixed(
            "AutoMinorVersionUpgrade",
            auto_minor,
            f"auto minor version upgrade {'on' if auto_minor else 'off'}",
        )
    if not now.get("StorageEncrypted", True):
        refuse.append("storage encryption off -> on")
    for key, want in (("MasterUsername", cfg.master_username), ("DBName", cfg.db_name)):
        if key in now and now[key] != want:
            refuse.append(f"{key} {now[key]} -> {want}")
    group = (now.get("DBSubnetGroup") or {}).get("DBSubnetGroupName")
    if group != cfg.subnet_group:
        refuse.append(f"subnet group {group} -> {cfg.subnet_group}")
    storage = int(now.get("AllocatedStorage", cfg.allocated_storage))
    if storage > cfg.allocated_storage:
        refuse.append(f"storage {storage} -> {cfg.allocated_storage} GB (RDS storage can't shrink)")
    elif storage < cfg.allocated_storage:
        fixed(
            "AllocatedStorage",
            cfg.allocated_storage,
            f"storage {storage} -> {cfg.allocated_storage} GB",
        )
    if now.get("StorageType", cfg.storage_type) != cfg.storage_type:
        fixed(
            "StorageType",
            cfg.storage_type,
            f"storage type {now['StorageType']} -> {cfg.storage_type}",
        )
    if now.get("DBInstanceClass") != cfg.instance_class:
        fixed(
            "DBInstanceClass",
            cfg.instance_class,
            f"instance class {now.get('DBInstanceClass')} -> {cfg.instance_class}",
        )
    groups = sorted(g["VpcSecurityGroupId"] for g in now.get("VpcSecurityGroups", []))
    if groups != [sg_id]:
        fixed("VpcSecurityGroupIds", [sg_id], f"security groups {groups} -> [{sg_id}]")
    if bool(now.get("DeletionProtection")) != cfg.deletion_protection:
        fixed(
            "DeletionProtection",
            cfg.deletion_protection,
            f"deletion protection {'on' if cfg.deletion_protection else 'off'}",
        )
    if now.get("PubliclyAccessible"):
        fixed("PubliclyAccessible", False, "publicly accessible -> not")
    if not now.get("MasterUserSecret"):
        fixed("ManageMasterUserPassword", True, "master password managed by RDS in Secrets Manager")

    fixes = [_refuse(detail, cfg.identifier) for detail in refuse]
    if changes:
        fixes.append(
            Fix("; ".join(details), lambda: modify_instance(run, cfg.identifier, **changes))
        )
    return fixes


def _refuse(detail: str, identifier: str) -> Fix:
    def refuse() -> None:
        raise StepError(
            f"DB instance {identifier} can't be changed in place ({detail})", hint=REBUILD_HINT
        )

    return Fix(detail, refuse, action="replace")


def modify_instance(run: StepRun, identifier: str, **changes) -> None:
    """ModifyDBInstance, applied now; retried while the instance is creating or modifying."""
    rds = run.clients.rds
    run.retry(
        lambda: rds.modify_db_instance(
            DBInstanceIdentifier=identifier, ApplyImmediately=True, **changes
        ),
        codes=("InvalidDBInstanceState", "InvalidDBInstanceStateFault"),
        timeout=INSTANCE_TIMEOUT,
        reason=f"DB instance {identifier} is still creating or being modified",
    )


# ---------------------------------------------------------------- outputs and checks


def _outputs(cfg, instance: Resource | None) -> dict:
    if instance is None:
        return {
            "identifier": cfg.identifier,
            "arn": Pending(f"db-instance {cfg.identifier}"),
            "secret_arn": Pending(f"master user secret of {cfg.identifier}"),
            "port": DEFAULT_PORT,
            "db_name": cfg.db_name,
            "endpoint_address": None,
        }
    endpoint = instance.get("Endpoint") or {}
    return {
        "identifier": instance["DBInstanceIdentifier"],
        "arn": instance["DBInstanceArn"],
        "secret_arn": (instance.get("MasterUserSecret") or {}).get("SecretArn"),
        "port": endpoint.get("Port") or instance.get("DbInstancePort") or DEFAULT_PORT,
        "db_name": instance.get("DBName", cfg.db_name),
        "endpoint_address": endpoint.get("Address"),
    }


def _failed(status: str) -> bool:
    return status in FAILED_STATES or status.startswith("incompatible-")


def _status_check(identifier: str, instance: Resource) -> Check:
    status = instance.get("DBInstanceStatus", "unknown")
    name = f"db-instance {identifier} status"
    if _failed(status):
        return Check(name, False, f"{status}: the database can't serve; {REBUILD_HINT}")
    if status == "available":
        endpoint = instance.get("Endpoint") or {}
        return Check(name, True, f"available at {endpoint.get('Address')}:{endpoint.get('Port')}")
    if status == "creating":
        return Check(name, True, "creating (RDS takes 5-8 minutes; the ecs step waits for it)")
    return Check(name, True, f"{status} (transitional; it returns to available on its own)")


def _secret_check(run: StepRun, identifier: str, instance: Resource) -> Check:
    """The RDS-managed secret exists (described only: its value is never read)."""
    name = f"db-instance {identifier} master user secret"
    secret = instance.get("MasterUserSecret") or {}
    arn = secret.get("SecretArn")
    if not arn:
        return Check(name, False, "the master password is not managed by RDS")
    try:
        described = run.clients.secretsmanager.describe_secret(SecretId=arn)
    except ClientError as exc:
        if is_code(exc, "ResourceNotFoundException"):
            return Check(name, False, f"{arn} not found")
        raise
    if described.get("DeletedDate"):
        return Check(name, False, f"{arn} is scheduled for deletion")
    return Check(name, True, f"{arn} ({secret.get('SecretStatus', 'unknown')})")


# ---------------------------------------------------------------- delete


def _final_snapshot_id(identifier: str) -> str:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{identifier}-final-{stamp}"


def _delete_instance(run: StepRun, instance: Resource) -> None:
    cfg = run.config.rds
    rds = run.clients.rds
    identifier = instance["DBInstanceIdentifier"]
    if instance.get("DBInstanceStatus") != "deleting":
        if cfg.final_snapshot:
            choice = {"FinalDBSnapshotIdentifier": _final_snapshot_id(identifier)}
        else:
            choice = {"SkipFinalSnapshot": True}

        def delete() -> None:
            try:
                rds.delete_db_instance(
                    DBInstanceIdentifier=identifier, DeleteAutomatedBackups=True, **choice
                )
            except ClientError as exc:
                # Already on its way out (another msctl, or the console): just wait.
                message = str(exc).lower()
                deleting = "being deleted" in message or "deleting" in message
                if not (is_code(exc, "InvalidDBInstanceState") and deleting):
                    raise

        run.retry(
            delete,
            codes=("InvalidDBInstanceState", "InvalidDBInstanceStateFault"),
            timeout=INSTANCE_TIMEOUT,
            reason=f"DB instance {identifier} is still creating or being modified",
        )

    def gone() -> tuple[bool, str]:
        try:
            found = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"]
        except ClientError as exc:
            if is_code(exc, "DBInstanceNotFound", "DBInstanceNotFoundFault"):
                return True, "deleted"
            raise
        return not found, found[0].get("DBInstanceStatus", "unknown") if found else "deleted"

    run.wait(f"DB instance {identifier} to be deleted", gone, timeout=INSTANCE_TIMEOUT)
