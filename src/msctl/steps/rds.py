"""rds: the DB parameter group, the DB subnet group and the PostgreSQL instance (seed 2.2).

The master password is never chosen, seen or stored by msctl: RDS manages it in Secrets
Manager (ManageMasterUserPassword) and msctl records only the secret's ARN.

The instance runs with the lab's parameter group, which sets `rds.force_ssl=1`: PostgreSQL
refuses every connection that doesn't use TLS (the services' libpq negotiates it). A group
newly given to an existing instance takes effect only after a reboot, which the fix does.
IAM database authentication is on (AWS FSBP RDS.10; the services still log in with the
managed password); a standby in the second AZ (`rds.multi_az`) is off: it doubles the cost.

RDS takes 5-8 minutes to create an instance on AWS. `apply` starts the create and returns:
nothing else needs the endpoint (the services look it up themselves, by the identifier), so
the rest of the lab builds meanwhile; the ecs step waits for `available_wait` together with
the services' rollout, so that `up` ends when the lab works.
"""

from __future__ import annotations

import re

from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from ..aws.errors import is_code
from ..aws.tags import as_list
from ..aws.waiters import Wait
from ..engine.model import Check, Pending
from ..engine.step import NotSupported, StepError
from ..resources import Resource
from ..resources.base import absent
from ..resources.data import (
    DB_INSTANCE,
    DB_PARAMETER_GROUP,
    DB_SUBNET_GROUP,
    INSTANCE_TIMEOUT,
    modify_instance,
)
from .base import LabStep
from .run import Fix, StepRun

ENGINE = "postgres"
DEFAULT_PORT = 5432
BACKUP_RETENTION_DAYS = 1
# What the lab's parameter group sets, applied at once (dynamic parameters: no reboot).
PARAMETERS = {"rds.force_ssl": "1"}
PENDING_REBOOT = "pending-reboot"

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
CREATE_EXPECTED = 420  # seconds, typically, on AWS (5-8.5 min)


class RdsStep(LabStep):
    name = "rds"
    requires = ("vpc", "sg")
    services = ("rds", "secretsmanager")
    description = "DB parameter and subnet groups, PostgreSQL instance (TLS required)"
    # The instance goes first (no final snapshot unless rds.final_snapshot, deletion
    # protection off only if the config says off), then its subnet and parameter groups.
    kinds = (DB_PARAMETER_GROUP, DB_SUBNET_GROUP, DB_INSTANCE)

    def names(self, config):
        cfg = config.rds
        return [
            (DB_INSTANCE, cfg.identifier),
            (DB_SUBNET_GROUP, cfg.subnet_group),
            (DB_PARAMETER_GROUP, cfg.parameter_group),
        ]

    def reconcile(self, run: StepRun) -> dict:
        cfg = run.config.rds
        rds = run.clients.rds
        lab = run.ctx.lab
        subnet_ids = list(run.outputs_of("vpc")["private_subnet_ids"])
        sg_id = run.outputs_of("sg")["group_ids"][cfg.security_group]

        family = parameter_family(cfg.engine_version)
        parameters = run.ensure(
            DB_PARAMETER_GROUP,
            cfg.parameter_group,
            create=lambda: rds.create_db_parameter_group(
                DBParameterGroupName=cfg.parameter_group,
                DBParameterGroupFamily=family,
                Description=f"msctl lab {lab}: the database's parameters (TLS required)",
                Tags=as_list(run.tags(cfg.parameter_group)),
            )["DBParameterGroup"],
            fixes=lambda found: _parameter_fixes(run, found, family),
        )
        group = run.ensure(
            DB_SUBNET_GROUP,
            cfg.subnet_group,
            after=subnet_ids,
            create=lambda: rds.create_db_subnet_group(
                DBSubnetGroupName=cfg.subnet_group,
                DBSubnetGroupDescription=_subnet_group_description(lab),
                SubnetIds=subnet_ids,
                Tags=as_list(run.tags(cfg.subnet_group)),
            )["DBSubnetGroup"],
            fixes=lambda found: _subnet_group_fixes(run, found, subnet_ids),
        )

        existing = run.claim(DB_INSTANCE, cfg.identifier, _instance(rds, cfg.identifier))
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
            DB_INSTANCE,
            cfg.identifier,
            after=[group, sg_id, parameters],
            find=lambda: existing,
            create=create,
            # The create call carried every setting: a just-created instance is as configured
            # (and can't be modified while it is still creating).
            fixes=lambda inst: [] if created else _instance_fixes(run, inst, sg_id),
        )

        instance = created[0] if created else existing
        if instance is not None and not run.dry_run:
            instance = _instance(rds, cfg.identifier) or instance
        return _outputs(cfg, instance)

    def teardown(self, run: StepRun) -> None:
        """Deletion protection goes off first, and only when the config says off."""
        cfg = run.config.rds
        rds = run.clients.rds
        found = run.claim(DB_INSTANCE, cfg.identifier, _instance(rds, cfg.identifier))
        if found is not None and found.get("DeletionProtection"):
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
                apply=lambda: modify_instance(run, rds, cfg.identifier, DeletionProtection=False),
            )
        super().teardown(run)

    def verify(self, run: StepRun) -> list[Check]:
        checks = super().verify(run)
        cfg = run.config.rds
        instance = run.got(DB_INSTANCE, cfg.identifier)
        if instance is None:
            return checks  # the default checks already report it missing
        checks.append(_status_check(cfg.identifier, instance))
        checks.append(_secret_check(run, cfg.identifier, instance))
        return checks


# ---------------------------------------------------------------- availability, for ecs


def available_wait(
    run: StepRun, identifier: str, timeout: float = INSTANCE_TIMEOUT, seen: dict | None = None
) -> Wait:
    """The wait until the instance is `available` with an endpoint (which lands in `seen`);
    a state it won't recover from on its own is an error."""
    rds = run.clients.rds
    seen = {} if seen is None else seen

    def check() -> tuple[bool, str]:
        instance = _instance(rds, identifier)
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

    return Wait(f"DB instance {identifier} to be available", check, timeout, CREATE_EXPECTED)


# ---------------------------------------------------------------- lookups


def _instance(rds, identifier: str) -> Resource | None:
    """The instance as RDS describes it now, also while it is being deleted."""
    return absent(lambda: DB_INSTANCE.describe(rds, identifier), DB_INSTANCE.missing)


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


def parameter_family(engine_version: str) -> str:
    """The parameter group family of an engine version: "15.4" -> "postgres15"."""
    return f"{ENGINE}{_major(engine_version)}"


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
        DBParameterGroupName=cfg.parameter_group,
        VpcSecurityGroupIds=[sg_id],
        PubliclyAccessible=False,
        MultiAZ=cfg.multi_az,
        EnableIAMDatabaseAuthentication=True,
        DeletionProtection=cfg.deletion_protection,
        CopyTagsToSnapshot=True,
        BackupRetentionPeriod=BACKUP_RETENTION_DAYS,
        Tags=as_list(run.tags(cfg.identifier)),
    )["DBInstance"]


def _parameter_fixes(run: StepRun, group: Resource, family: str) -> list[Fix]:
    name = group["DBParameterGroupName"]
    if group.get("DBParameterGroupFamily", family) != family:
        return [
            _refuse(
                f"family {group['DBParameterGroupFamily']} -> {family}", name, "DB parameter group"
            )
        ]
    rds = run.clients.rds
    pages = rds.get_paginator("describe_db_parameters").paginate(
        DBParameterGroupName=name, Source="user"
    )
    current = {
        p["ParameterName"]: p.get("ParameterValue") for page in pages for p in page["Parameters"]
    }
    wrong = {k: v for k, v in PARAMETERS.items() if current.get(k) != v}
    if not wrong:
        return []
    return [
        Fix(
            "; ".join(f"{k} {current.get(k) or 'default'} -> {v}" for k, v in wrong.items()),
            lambda: rds.modify_db_parameter_group(
                DBParameterGroupName=name,
                Parameters=[
                    {"ParameterName": k, "ParameterValue": v, "ApplyMethod": "immediate"}
                    for k, v in wrong.items()
                ],
            ),
        )
    ]


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
    if bool(now.get("MultiAZ")) != cfg.multi_az:
        fixed("MultiAZ", cfg.multi_az, f"multi-AZ {'on' if cfg.multi_az else 'off'}")
    if not now.get("IAMDatabaseAuthenticationEnabled"):
        fixed("EnableIAMDatabaseAuthentication", True, "IAM database authentication on")
    groups = {g["DBParameterGroupName"]: g for g in now.get("DBParameterGroups", [])}
    if cfg.parameter_group not in groups:
        fixed(
            "DBParameterGroupName",
            cfg.parameter_group,
            f"parameter group {', '.join(groups) or 'none'} -> {cfg.parameter_group} "
            "(the instance reboots to apply it)",
        )
    rds = run.clients.rds

    def apply() -> None:
        modify_instance(run, rds, cfg.identifier, **changes)
        if "DBParameterGroupName" in changes:
            _reboot_if_pending(run, cfg.identifier)

    fixes = [_refuse(detail, cfg.identifier) for detail in refuse]
    if changes:
        fixes.append(Fix("; ".join(details), apply))
    elif groups[cfg.parameter_group].get("ParameterApplyStatus") == PENDING_REBOOT:
        fixes.append(
            Fix(
                f"reboot to apply parameter group {cfg.parameter_group}",
                lambda: _reboot_if_pending(run, cfg.identifier),
            )
        )
    return fixes


def _reboot_if_pending(run: StepRun, identifier: str) -> None:
    """Once the modification is done: reboot if the parameter group waits for one."""
    rds = run.clients.rds
    seen: list[str] = []

    def settled() -> tuple[bool, str]:
        found = _instance(rds, identifier) or {}
        seen[:] = [g.get("ParameterApplyStatus", "") for g in found.get("DBParameterGroups", [])]
        status = found.get("DBInstanceStatus", "unknown")
        return status == "available" and "applying" not in seen, f"{status}, {seen}"

    run.wait(
        f"DB instance {identifier} to take its parameter group", settled, timeout=INSTANCE_TIMEOUT
    )
    if PENDING_REBOOT in seen:
        run.retry(
            lambda: rds.reboot_db_instance(DBInstanceIdentifier=identifier),
            codes=("InvalidDBInstanceState", "InvalidDBInstanceStateFault"),
            timeout=INSTANCE_TIMEOUT,
            reason=f"DB instance {identifier} is still being modified",
        )


def _refuse(detail: str, identifier: str, what: str = "DB instance") -> Fix:
    def refuse() -> None:
        raise StepError(
            f"{what} {identifier} can't be changed in place ({detail})", hint=REBUILD_HINT
        )

    return Fix(detail, refuse, action="replace")


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
        return Check(name, True, "creating (RDS takes 5-8 minutes; the services find it then)")
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
