"""The step dependency graph: validation, order, and --only selection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class GraphError(Exception):
    """The steps don't form a valid DAG, or a selection names an unknown step."""


def validate(requires: Mapping[str, Iterable[str]]) -> None:
    for step, deps in requires.items():
        for dep in deps:
            if dep not in requires:
                raise GraphError(f"step {step!r} requires unknown step {dep!r}")
    order(requires)


def order(requires: Mapping[str, Iterable[str]]) -> list[str]:
    """Topological order (Kahn), ties broken by declaration order; raises on a cycle."""
    deps = {s: set(d) for s, d in requires.items()}
    done: list[str] = []
    while deps:
        ready = [s for s, d in deps.items() if not d - set(done)]
        if not ready:
            cycle = " -> ".join(_find_cycle(deps))
            raise GraphError(f"steps depend on each other in a cycle: {cycle}")
        for s in ready:
            done.append(s)
            del deps[s]
    return done


def _find_cycle(deps: Mapping[str, set[str]]) -> list[str]:
    start = next(iter(deps))
    path = [start]
    while True:
        nxt = next(d for d in deps[path[-1]] if d in deps)
        if nxt in path:
            return path[path.index(nxt) :] + [nxt]
        path.append(nxt)


def transpose(requires: Mapping[str, Iterable[str]]) -> dict[str, tuple[str, ...]]:
    """For `down`: a step waits for every step that requires it."""
    out: dict[str, list[str]] = {s: [] for s in requires}
    for step, deps in requires.items():
        for dep in deps:
            out[dep].append(step)
    return {s: tuple(d) for s, d in out.items()}


def closure(requires: Mapping[str, Iterable[str]], roots: Iterable[str]) -> set[str]:
    """The roots plus everything they (transitively) point to in `requires`."""
    seen: set[str] = set()
    stack = list(roots)
    while stack:
        step = stack.pop()
        if step not in requires:
            known = ", ".join(requires)
            raise GraphError(f"unknown step {step!r} (steps: {known})")
        if step not in seen:
            seen.add(step)
            stack.extend(requires[step])
    return seen
