"""Every resource is tagged at creation with the lab, the step and its logical name."""

from __future__ import annotations

LAB = "msctl:lab"
STEP = "msctl:step"
NAME = "msctl:name"


def lab_tags(lab: str, step: str, name: str) -> dict[str, str]:
    return {LAB: lab, STEP: step, NAME: name, "Name": name}


def as_list(tags: dict[str, str]) -> list[dict[str, str]]:
    """The [{"Key": ..., "Value": ...}] form most services take."""
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def as_dict(tag_list: list[dict] | None) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in tag_list or []}


def ec2_spec(resource_type: str, tags: dict[str, str]) -> list[dict]:
    return [{"ResourceType": resource_type, "Tags": as_list(tags)}]


def ec2_filters(lab: str, name: str | None = None) -> list[dict]:
    filters = [{"Name": f"tag:{LAB}", "Values": [lab]}]
    if name is not None:
        filters.append({"Name": f"tag:{NAME}", "Values": [name]})
    return filters
