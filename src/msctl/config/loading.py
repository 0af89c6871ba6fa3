"""Loading the lab config: YAML with line numbers (refusing bombs), --set overrides, and
every problem as `<file>:<line>: <dotted.path>: <what was expected>`."""

from __future__ import annotations

import difflib
import sys
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .models import LabConfig, cross_checks

# Where a lab's config is looked for, in the current directory and each parent.
CONFIG_NAMES = ("config/lab.yaml", "msctl.yaml")


def find_config(start: Path, env: str | None = None) -> Path | None:
    """$MSCTL_CONFIG, else the nearest config/lab.yaml or msctl.yaml at or above `start`."""
    if env:
        return Path(env)
    for directory in [start, *start.parents]:
        for name in CONFIG_NAMES:
            if (directory / name).is_file():
                return directory / name
    return None


def project_root(config_path: Path) -> Path:
    """The directory the config's relative paths (and the state dir) start from: the parent
    of a `config/` directory, else the config's own directory."""
    base = Path(config_path).resolve().parent
    return base.parent if base.name == "config" else base


class ConfigError(Exception):
    """A user error in the config: `problems` are complete one-line messages."""

    def __init__(self, problems: list[str]):
        self.problems = [_one_line(p) for p in problems]
        super().__init__("\n".join(self.problems))


def _one_line(text: str) -> str:
    """Control characters (a newline inside a quoted key, ...) escaped: one problem, one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def load_config(path: Path, overrides: list[str] = ()) -> LabConfig:
    """Read, override and validate. Raises ConfigError with one line per problem."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:  # at most one byte past the limit: /dev/zero ends here
            data = fh.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(
                [
                    f"{path}: more than {MAX_CONFIG_BYTES} bytes is far more than a lab config; "
                    "is this the right file?"
                ]
            )
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file {path} not found (pass -c/--config PATH)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read config file {path}: {exc}"]) from None
    try:
        node, data = _parse(path, text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
        raise ConfigError([f"{where}: YAML syntax error: {problem}"]) from None
    except RecursionError:  # the limits below make this unreachable; never a traceback
        raise ConfigError([f"{path}: YAML nested too deeply to read"]) from None
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}:1: the config must be a mapping of sections, not {_kind(data)}"]
        )
    lines = _line_index(node)
    overridden: set[tuple] = set()
    for item in overrides:
        overridden.add(_apply_override(data, item))
    try:
        config = LabConfig.model_validate({**data, "base_dir": project_root(path)})
    except ValidationError as exc:
        problems = [
            _problem(path, lines, overridden, tuple(err["loc"]), _message(err))
            for err in exc.errors()
        ]
        raise ConfigError(problems) from None
    problems = [_problem(path, lines, overridden, loc, msg) for loc, msg in cross_checks(config)]
    if problems:
        raise ConfigError(problems)
    return config


# A YAML "bomb" (billion laughs: anchors whose aliases multiply) composes to a small graph
# but expands to billions of values once constructed and walked, and a recursive alias never
# ends. A lab config is a few hundred values, a few levels deep: these limits are far above
# that and far below harm.
MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_CHARS = MAX_CONFIG_BYTES  # so at most that many characters too
MAX_YAML_DEPTH = 50
MAX_YAML_VALUES = 100_000


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader that refuses deep nesting while composing (PyYAML's composer recurses),
    and reports a value it can't construct (a date like 2024-13-45, an integer too long to
    convert) as a YAML error with its line instead of a bare ValueError."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested more than {MAX_YAML_DEPTH} levels deep",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        """A key given twice is an error (YAML would silently keep the last value)."""
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _value in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"key {key!r} is given twice (first on line {seen[key] + 1})",
                        key_node.start_mark,
                    )
                seen.setdefault(key, key_node.start_mark.line)
        return super().construct_mapping(node, deep)

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"can't read this value: {exc}", node.start_mark
            ) from None


def _parse(path: Path, text: str) -> tuple[yaml.Node | None, Any]:
    """The composed node graph (for line numbers) and the data, refusing alias bombs."""
    loader = _GuardedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_aliases(path, node)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_aliases(path: Path, root: yaml.Node) -> None:
    """Refuse a document whose aliases expand it beyond MAX_YAML_VALUES values or
    MAX_YAML_DEPTH levels, or refer to a node that contains them. Each distinct node is
    visited once (sizes are memoized), so a bomb is caught in the time of its text."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    ancestors: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        where = f"{path}:{node.start_mark.line + 1}"
        if done:
            ancestors.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_YAML_VALUES:
                raise ConfigError(
                    [
                        f"{where}: YAML aliases expand the config to more than {MAX_YAML_VALUES} "
                        "values (an alias bomb?); write the values out instead"
                    ]
                )
            if depth[key] > MAX_YAML_DEPTH:
                raise ConfigError(
                    [
                        f"{where}: YAML aliases nest the config more than {MAX_YAML_DEPTH} "
                        "levels deep; write the values out instead"
                    ]
                )
            continue
        if key in size:
            continue
        ancestors.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in ancestors:
                raise ConfigError(
                    [
                        f"{where}: a YAML alias refers to a value that contains it; a config "
                        "can't be recursive"
                    ]
                )
            if id(child) not in size:
                stack.append((child, False))


def _kind(value: Any) -> str:
    return {list: "a list", str: "a string", type(None): "empty"}.get(
        type(value), type(value).__name__
    )


def _line_index(node: yaml.Node | None) -> dict[tuple, int]:
    """Map each path (tuple of keys and indexes) to its 1-based line in the file."""
    index: dict[tuple, int] = {}

    def walk(n: yaml.Node, loc: tuple) -> None:
        index[loc] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                child = loc + (key.value,)
                walk(value, child)
                index[child] = key.start_mark.line + 1
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, loc + (i,))

    if node is not None:
        walk(node, ())
    return index


def _apply_override(data: dict, item: str) -> tuple:
    key, sep, raw = item.partition("=")
    parts = tuple(p for p in key.strip().split("."))
    if not sep or not all(parts):
        raise ConfigError(
            [f"--set {item}: expected dotted.key=value, e.g. --set rds.instance_class=db.t3.small"]
        )
    try:
        value = _parse(Path("--set"), raw)[1] if raw.strip() else ""
    except (yaml.YAMLError, ConfigError, RecursionError):
        value = raw
    target = data
    for i, part in enumerate(parts[:-1]):
        child = target.get(part) if isinstance(target, dict) else None
        if child is None:
            child = target[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(
                [f"--set {item}: {where} is not a section, cannot set {key} inside it"]
            )
        target = child
    target[parts[-1]] = value
    return parts


def _problem(path: Path, lines: dict, overridden: set, loc: tuple, message: str) -> str:
    loc = tuple("lambda" if part == "lambda_" else part for part in loc)
    dotted = _dotted(loc)
    for n in range(len(loc), 0, -1):
        if loc[:n] in overridden:
            return f"--set {_dotted(loc[:n])}: {dotted}: {message}"
    for item in overridden:  # a key the flag added, under the part at fault
        if item[: len(loc)] == loc:
            return f"--set {_dotted(item)}: {dotted}: {message}"
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            return f"{path}:{lines[loc[:n]]}: {dotted}: {message}"
    return f"{path}: {dotted}: {message}"


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _message(err: dict) -> str:
    kind = err["type"]
    if kind == "missing":
        return "required but missing"
    if kind == "extra_forbidden":
        close = difflib.get_close_matches(str(err["loc"][-1]), _keys_at(err["loc"][:-1]), n=1)
        if close:
            return f"unknown key; did you mean {close[0]!r}?"
        return "unknown key (check the spelling; see config/lab.yaml for every key)"
    if kind == "string_pattern_mismatch":
        return f"{_shown(err['input'])} is not a valid name ({_pattern_hint(err)})"
    message = err["msg"]
    if "input" in err and kind not in {"model_type", "dict_type", "list_type"}:
        message += f" (got {_shown(err['input'])})"
    return message


def _keys_at(loc: tuple) -> list[str]:
    """The keys the config allows at `loc` (a section, a map entry, a list item)."""
    model: Any = LabConfig
    for part in loc:
        model = _model_in(model)
        if model is None:
            return []
        if isinstance(model, type) and issubclass(model, BaseModel):
            field = next((f for n, f in model.model_fields.items() if part in (n, f.alias)), None)
            if field is None:
                return []
            model = field.annotation
        else:
            args = typing.get_args(model)
            model = args[-1] if args else None
    model = _model_in(model)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return []
    return [f.alias or n for n, f in model.model_fields.items() if n != "base_dir"]


def _model_in(annotation: Any) -> Any:
    """The type under Annotated[...] and `X | None`."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            return annotation


def _shown(value: Any, limit: int = 200) -> str:
    """The value as in the config, shortened; an integer too long to print says so."""
    try:
        text = repr(value)
    except ValueError:
        return f"an integer of more than {sys.get_int_max_str_digits()} digits"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _pattern_hint(err: dict) -> str:
    pattern = err.get("ctx", {}).get("pattern", "")
    return f"must match {pattern}"
