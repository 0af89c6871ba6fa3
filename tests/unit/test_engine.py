"""The runner with fake steps: order, concurrency, failure cascade, graph errors, down order."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from msctl.config import load_config
from msctl.context import Context, Target
from msctl.engine import graph, runner
from msctl.engine.model import Change, Check, Status
from msctl.engine.step import NotSupported, Step, StepError
from msctl.state import StateStore

ROOT = Path(__file__).resolve().parents[2]


class Fake(Step):
    """A step whose behaviour is a function; records when it ran."""

    def __init__(self, name, requires=(), action=None, log=None):
        self.name = name
        self.requires = tuple(requires)
        self.action = action or (lambda: None)
        self.log = log if log is not None else []

    def _do(self, verb):
        self.log.append((verb, self.name))
        self.action()

    def plan(self, ctx):
        self._do("plan")
        return {}, [Change("create", "thing", self.name)]

    def apply(self, ctx):
        self._do("apply")
        return {"id": self.name}, [Change("create", "thing", self.name)]

    def destroy(self, ctx, dry_run=False):
        self._do("destroy")
        return [Change("delete", "thing", self.name)]

    def check(self, ctx):
        self._do("verify")
        return {}, [Check(self.name, True)]


@pytest.fixture
def ctx(tmp_path):
    config = load_config(ROOT / "config" / "lab.yaml")
    return Context(
        config, Target("local", "us-east-1", "http://127.0.0.1:1"), StateStore(tmp_path, config.lab)
    )


def steps_of(*fakes):
    return {f.name: f for f in fakes}


def diamond(log, **actions):
    """a -> (b, c) -> d"""

    def mk(name, requires=()):
        return Fake(name, requires, actions.get(name), log)

    return steps_of(mk("a"), mk("b", ["a"]), mk("c", ["a"]), mk("d", ["b", "c"]))


def test_topological_order(ctx):
    log = []
    result = runner.run(ctx, diamond(log), "apply", parallel=1)
    order = [name for _, name in log]
    assert order.index("a") < order.index("b") < order.index("d")
    assert order.index("c") < order.index("d")
    assert all(r.status is Status.COMPLETE for r in result.results.values())
    assert ctx.state.outputs("d") == {"id": "d"}


def test_independent_steps_really_run_concurrently(ctx):
    barrier = threading.Barrier(2, timeout=10)
    # b and c can only both pass the barrier if they run at the same time.
    steps = diamond([], b=barrier.wait, c=barrier.wait)
    result = runner.run(ctx, steps, "apply", parallel=2)
    assert result.ok, {n: r.error for n, r in result.results.items()}


def test_parallel_1_is_serial(ctx):
    active, peak = [0], [0]
    lock = threading.Lock()

    def work():
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        threading.Event().wait(0.01)
        with lock:
            active[0] -= 1

    runner.run(ctx, diamond([], a=work, b=work, c=work, d=work), "apply", parallel=1)
    assert peak[0] == 1


def test_failure_skips_dependents_only(ctx):
    def boom():
        raise StepError("b broke", hint="fix b")

    log = []
    steps = diamond(log, b=boom)
    steps["e"] = Fake("e", ["c"], log=log)
    result = runner.run(ctx, steps, "apply", parallel=2)
    r = result.results
    assert r["b"].status is Status.FAILED and r["b"].hint == "fix b"
    assert r["d"].status is Status.SKIPPED and "dependency b failed" in r["d"].reason
    assert r["c"].status is Status.COMPLETE and r["e"].status is Status.COMPLETE
    assert ("apply", "d") not in log
    assert [f.step for f in result.failed] == ["b"]
    assert ctx.state.status("b") == ("failed", "b broke")


def test_unexpected_exception_fails_the_step_with_a_traceback(ctx):
    def boom():
        raise RuntimeError("surprise")

    result = runner.run(ctx, diamond([], a=boom), "apply")
    a = result.results["a"]
    assert a.status is Status.FAILED
    assert a.error == "RuntimeError: surprise"
    assert "Traceback" in a.debug
    assert all(result.results[n].status is Status.SKIPPED for n in "bcd")


def test_not_supported_is_reported_not_failed(ctx):
    def unsupported():
        raise NotSupported("no X-Ray here")

    result = runner.run(ctx, diamond([], b=unsupported), "apply")
    assert result.results["b"].status is Status.UNSUPPORTED
    assert result.results["d"].status is Status.COMPLETE
    assert result.ok


def test_down_walks_the_transposed_graph(ctx):
    log = []
    runner.run(ctx, diamond(log), "destroy", parallel=1)
    order = [name for _, name in log]
    assert order.index("d") < order.index("b") < order.index("a")
    assert order.index("c") < order.index("a")


def test_cycle_is_an_error():
    with pytest.raises(graph.GraphError, match="cycle: .*a.*b.*a|cycle: .*b.*a.*b"):
        graph.validate({"a": ("b",), "b": ("a",), "c": ()})


def test_unknown_dependency_is_an_error(ctx):
    with pytest.raises(graph.GraphError, match="step 'b' requires unknown step 'zz'"):
        runner.run(ctx, steps_of(Fake("a"), Fake("b", ["zz"])), "apply")


def test_only_selects_requirements_for_up_and_dependents_for_down():
    steps = diamond([])
    assert runner.select(steps, ["b"], "apply") == ["a", "b"]
    assert runner.select(steps, ["b"], "destroy") == ["b", "d"]
    assert runner.select(steps, None, "apply") == ["a", "b", "c", "d"]
    with pytest.raises(graph.GraphError, match="unknown step 'x'"):
        runner.select(steps, ["x"], "apply")


def test_unselected_dependencies_do_not_block(ctx):
    log = []
    result = runner.run(ctx, diamond(log), "apply", selected=["b", "d"])
    assert set(result.results) == {"b", "d"}
    assert [n for _, n in log] == ["b", "d"]


def test_events_bracket_every_step(ctx):
    events = []
    ctx.listener = events.append
    runner.run(ctx, diamond([]), "apply", parallel=2)
    for name in "abcd":
        kinds = [e.kind for e in events if e.step == name]
        assert kinds[0] == "start" and kinds[-1] == "finish"
