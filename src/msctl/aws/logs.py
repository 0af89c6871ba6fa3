"""Log groups msctl owns: created before the service that writes to them, with retention,
so that they are tagged, retained as configured and removed on destroy."""

from __future__ import annotations

from ..engine.step import Fix, StepRun


def ensure_log_group(run: StepRun, name: str, retention_days: int) -> str:
    logs = run.clients.logs
    return run.ensure(
        "log-group",
        name,
        id_key="logGroupName",
        find=lambda: find_log_group(logs, name),
        create=lambda: _create(logs, name, run.tags(name)),
        fixes=lambda group: _retention_fix(logs, group, retention_days),
    )


def remove_log_group(run: StepRun, name: str) -> None:
    logs = run.clients.logs
    run.remove(
        "log-group",
        name,
        find=lambda: find_log_group(logs, name),
        delete=lambda _group: logs.delete_log_group(logGroupName=name),
    )


def find_log_group(logs, name: str) -> dict | None:
    groups = logs.describe_log_groups(logGroupNamePrefix=name)["logGroups"]
    return next((g for g in groups if g["logGroupName"] == name), None)


def _create(logs, name: str, tags: dict[str, str]) -> dict:
    logs.create_log_group(logGroupName=name, tags=tags)
    return {"logGroupName": name}


def _retention_fix(logs, group: dict, days: int) -> list[Fix]:
    if group.get("retentionInDays") == days:
        return []
    return [
        Fix(
            f"retention {group.get('retentionInDays', 'never expire')} -> {days} days",
            lambda: logs.put_retention_policy(
                logGroupName=group["logGroupName"], retentionInDays=days
            ),
        )
    ]
