"""The lab's steps. The runner orders them by `requires`; this order only breaks ties."""

from __future__ import annotations

from ..engine.step import Step
from .nat import NatStep
from .sg import SgStep
from .vpc import VpcStep

STEP_CLASSES: tuple[type[Step], ...] = (
    VpcStep,
    NatStep,
    SgStep,
)


def all_steps() -> dict[str, Step]:
    return {cls.name: cls() for cls in STEP_CLASSES}
