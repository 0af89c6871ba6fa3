"""Log groups the lab's services write to: created by msctl before the service that writes
to them, with retention, so that they are tagged, retained as configured and removed by
`down` (a service would otherwise create them itself, untagged and kept forever). A step
that calls `ensure_log_group` lists LOG_GROUP in its kinds."""

from __future__ import annotations

from ..resources.compute import LOG_GROUP
from .run import Fix, StepRun


def ensure_log_group(run: StepRun, name: str, retention_days: int) -> str:
    logs = run.clients.logs

    def create() -> dict:
        logs.create_log_group(logGroupName=name, tags=run.tags(name))
        return {"logGroupName": name}

    def retention(group: dict) -> list[Fix]:
        if group.get("retentionInDays") == retention_days:
            return []
        return [
            Fix(
                f"retention {group.get('retentionInDays', 'never expire')} -> {retention_days} days",
                lambda: logs.put_retention_policy(
                    logGroupName=name, retentionInDays=retention_days
                ),
            )
        ]

    return run.ensure(LOG_GROUP, name, create=create, fixes=retention)
