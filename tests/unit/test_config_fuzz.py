"""Property tests over the config loader: any malformed or hostile YAML gives either a valid
config or a ConfigError of clean one-line messages, never another exception; the CLI turns
it into `Error:` lines and exit 2, never a traceback.

Deterministic (derandomize=True) and bounded (max_examples, deadline None: the loader is
pure Python, and CI machines vary)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msctl.cli import main
from msctl.config import MAX_YAML_VALUES, ConfigError, LabConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
LAB_TEXT = (ROOT / "config" / "lab.yaml").read_text()
LAB_DATA = yaml.safe_load(LAB_TEXT)

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Each example of these parses the whole lab.yaml (pure-Python YAML, ~20 ms): fewer of them.
LAB_FUZZ = settings(FUZZ, max_examples=60)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory) -> Path:
    # One file, rewritten per example (a function-scoped tmp_path doesn't mix with @given).
    return tmp_path_factory.mktemp("fuzz") / "lab.yaml"


def outcome(path: Path, content: str | bytes) -> ConfigError | LabConfig:
    """Load `content`; a ConfigError must be made of clean one-line messages."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert exc.problems, "a ConfigError without a message"
        for problem in exc.problems:
            assert isinstance(problem, str) and problem.strip()
            # printable: no newline, carriage return or other line or control character
            assert problem.isprintable(), repr(problem)
        return exc
    assert isinstance(config, LabConfig)
    return config


def cli_says_error(path: Path) -> None:
    """`msctl plan -c <file>` on a config that doesn't load: exit 2, only `Error:` lines."""
    result = CliRunner().invoke(main, ["plan", "-c", str(path), "--state-dir", str(path.parent)])
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    lines = result.output.splitlines()
    assert lines and all(line.startswith("Error:") for line in lines), result.output


# ---------------------------------------------------------------- strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.binary(max_size=20),
)
structures = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(
            st.one_of(st.text(max_size=15), st.integers(), st.booleans()), children, max_size=5
        ),
    ),
    max_leaves=30,
)


def dump(data) -> str:
    return yaml.dump(data, Dumper=yaml.SafeDumper, allow_unicode=True)


def paths(data, prefix=()):
    """Every (key path) in the lab's data, mappings and lists alike."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield (*prefix, i)
            yield from paths(value, (*prefix, i))


LAB_PATHS = sorted(paths(LAB_DATA), key=repr)


def parent_of(data, path):
    for part in path[:-1]:
        data = data[part]
    return data


# ---------------------------------------------------------------- properties


@FUZZ
@given(st.text(max_size=300))
def test_random_text(config_path, text):
    outcome(config_path, text)


@FUZZ
@given(st.binary(max_size=300))
def test_binary_junk_and_invalid_utf8(config_path, junk):
    outcome(config_path, junk)


@FUZZ
@given(structures)
def test_random_structures_dumped_to_yaml(config_path, data):
    outcome(config_path, dump(data))


@LAB_FUZZ
@given(st.data())
def test_the_lab_with_keys_deleted_renamed_or_retyped(config_path, data):
    lab = copy.deepcopy(LAB_DATA)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        path = data.draw(st.sampled_from(LAB_PATHS), label="path")
        try:
            parent = parent_of(lab, path)
            key = path[-1]
            parent[key]  # noqa: B018 - the path may be gone after an earlier mutation
        except (KeyError, IndexError, TypeError):
            continue
        action = data.draw(st.sampled_from(["delete", "rename", "retype"]), label="action")
        if action == "delete":
            del parent[key]
        elif action == "rename" and isinstance(parent, dict):
            parent[data.draw(st.text(min_size=1, max_size=12), label="new name")] = parent.pop(key)
        else:
            parent[key] = data.draw(structures, label="new value")
    result = outcome(config_path, dump(lab))
    if isinstance(result, ConfigError) and data.draw(st.integers(0, 9), label="cli") == 0:
        cli_says_error(config_path)


NUMBERS = st.one_of(
    st.integers(1, 20_000).map(lambda n: "9" * n),
    st.integers(1, 20_000).map(lambda n: "0x" + "f" * n),
    st.integers(1, 5_000).map(lambda n: "1" + ":59" * n),  # YAML 1.1 sexagesimal
    st.integers(1, 20_000).map(lambda n: "1e" + "9" * min(n, 400)),
    st.integers(1, 20_000).map(lambda n: "-" + "1" * n + ".5"),
    st.sampled_from([".inf", "-.inf", ".nan", "2024-13-45", "2024-02-30 25:61:61", "0o999"]),
)


@LAB_FUZZ
@given(st.data())
def test_huge_and_impossible_numbers_anywhere(config_path, data):
    lines = LAB_TEXT.splitlines()
    values = [
        i for i, line in enumerate(lines) if ": " in line and not line.lstrip().startswith("#")
    ]
    i = data.draw(st.sampled_from(values), label="line")
    key = lines[i].split(": ", 1)[0]
    lines[i] = f"{key}: {data.draw(NUMBERS, label='number')}"
    outcome(config_path, "\n".join(lines) + "\n")


@FUZZ
@given(st.binary(min_size=1, max_size=4), st.integers(0, len(LAB_TEXT.encode())))
def test_invalid_utf8_inside_the_lab(config_path, junk, at):
    raw = LAB_TEXT.encode()
    bad = bytes([0xFF]) + junk  # 0xFF never appears in UTF-8
    result = outcome(config_path, raw[:at] + bad + raw[at:])
    assert isinstance(result, ConfigError)
    assert "cannot read config file" in result.problems[0]


@settings(FUZZ, max_examples=30)
@given(st.integers(1, 3_000), st.sampled_from(["flow-list", "flow-map", "block"]))
def test_deep_nesting(config_path, depth, style):
    if style == "block":
        depth = min(depth, 300)  # indentation grows with depth: 300 levels is 90 KB already
    if style == "flow-list":
        text = "lab: " + "[" * depth + "]" * depth + "\n"
    elif style == "flow-map":
        text = "lab: " + "{a: " * depth + "1" + "}" * depth + "\n"
    else:
        text = "".join(f"{'  ' * i}k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"
    outcome(config_path, text)


def bomb(levels: int, fanout: int, merge: bool = False) -> str:
    """Billion laughs: each level refers `fanout` times to the one below."""
    lines = ["l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*l{i - 1}"] * fanout)
        if merge and i > 1:
            lines.append(f"l{i}: &l{i} {{<<: [{refs}], x{i}: 1}}")
        else:
            lines.append(f"l{i}: &l{i} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "text",
    [
        bomb(9, 10),  # 10^10 values once expanded
        bomb(40, 2),  # 2^40
        bomb(12, 10, merge=True),
        "a: &a [*a]\n",
        "a: &a {b: *a}\n",
        "a: &a [x]\nb: &b [*a, *b]\n",
    ],
    ids=["billion-laughs", "doubling", "merge-keys", "self-list", "self-map", "self-later"],
)
def test_alias_bombs_are_refused_before_they_expand(config_path, text):
    result = outcome(config_path, text)
    assert isinstance(result, ConfigError)
    assert any("alias" in p or "nested more than" in p for p in result.problems), result.problems
    cli_says_error(config_path)


@FUZZ
@given(st.integers(1, 8), st.integers(2, 12), st.booleans())
def test_any_alias_fanout_is_either_small_or_refused(config_path, levels, fanout, merge):
    result = outcome(config_path, bomb(levels, fanout, merge))
    assert isinstance(result, ConfigError)  # never a lab config, whatever its size
    if 10 * fanout**levels > MAX_YAML_VALUES:
        assert any("alias bomb" in p for p in result.problems), result.problems


def test_anchors_of_a_normal_size_still_work(config_path):
    text = LAB_TEXT.replace("  allowed_headers: [", "  allowed_headers: &headers [", 1).replace(
        "  allowed_methods: [GET, POST, PUT, DELETE, OPTIONS]", "  allowed_methods: [GET]"
    )
    config = outcome(config_path, text + "\nx-headers: *headers\n")
    assert isinstance(config, ConfigError)  # x-headers is an unknown key, found by its line
    assert config.problems[-1].endswith(
        "x-headers: unknown key (check the spelling; see config/lab.yaml for every key)"
    )
    config = outcome(config_path, text)
    assert isinstance(config, LabConfig) and config.cors.allowed_methods == ["GET"]


@settings(FUZZ, max_examples=40)
@given(st.one_of(st.text(max_size=200), structures.map(dump), st.binary(max_size=100)))
def test_cli_prints_only_error_lines_and_exits_2(config_path, content):
    result = outcome(config_path, content)
    if isinstance(result, ConfigError):
        cli_says_error(config_path)
