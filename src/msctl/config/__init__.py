"""The lab config: pydantic models (models.py) and YAML loading (loading.py).

Every problem is reported as `<file>:<line>: <dotted.path>: <what was expected>`.
"""

from .loading import (
    MAX_CONFIG_CHARS,
    MAX_YAML_DEPTH,
    MAX_YAML_VALUES,
    ConfigError,
    find_config,
    load_config,
    project_root,
)
from .models import LabConfig

__all__ = [
    "MAX_CONFIG_CHARS",
    "MAX_YAML_DEPTH",
    "MAX_YAML_VALUES",
    "ConfigError",
    "LabConfig",
    "find_config",
    "load_config",
    "project_root",
]
