"""Stage 5a, route: which executor a job with a given verdict should run on."""

from __future__ import annotations

from dataclasses import dataclass

from subcompat.verdict import COMPATIBLE, DEGRADED, ERROR, Verdict

SUBINTERPRETER = "subinterpreter"
FALLBACK = "fallback"
FALLBACKS = ("process", "thread")


@dataclass(frozen=True)
class Policy:
    """How verdicts map to executors; ``degraded`` jobs go to the fallback by default."""

    fallback: str = "process"
    degraded: str = FALLBACK  # fallback | subinterpreter

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, not {self.fallback!r}")
        if self.degraded not in (FALLBACK, SUBINTERPRETER):
            raise ValueError(f"degraded must be 'fallback' or 'subinterpreter', not {self.degraded!r}")


DEFAULT_POLICY = Policy()


@dataclass(frozen=True)
class Route:
    route: str  # subinterpreter | fallback
    executor: str  # subinterpreter | process | thread
    why: str


def route_for(verdict: Verdict | None, policy: Policy = DEFAULT_POLICY) -> Route:
    if verdict is None:
        return Route(FALLBACK, policy.fallback, "unknown: no verdict yet")
    v = verdict.verdict
    if v == COMPATIBLE:
        return Route(SUBINTERPRETER, SUBINTERPRETER, "compatible")
    if v == DEGRADED and policy.degraded == SUBINTERPRETER:
        return Route(SUBINTERPRETER, SUBINTERPRETER, "degraded, allowed by policy")
    if v == ERROR:
        return Route(FALLBACK, policy.fallback, "error: the module is broken everywhere")
    return Route(FALLBACK, policy.fallback, v)


def advice(verdict: Verdict, policy: Policy = DEFAULT_POLICY) -> str:
    """One sentence a person can act on."""
    r = route_for(verdict, policy)
    v = verdict.verdict
    if v == COMPATIBLE:
        return "safe for SubInterpreterExecutor"
    if v == ERROR:
        return "fix the module first: it fails in a normal interpreter too"
    if v == DEGRADED:
        if r.route == SUBINTERPRETER:
            return "runs in a sub-interpreter on the slower pure-Python path (policy allows it)"
        return (
            f"runs in a sub-interpreter only on a slower pure-Python fallback; "
            f"route to the {r.executor} executor (or set degraded policy to 'subinterpreter')"
        )
    if v == "unsupported":
        return f"this Python has no isolated sub-interpreters; use the {r.executor} executor"
    return f"use the {r.executor} executor (subcompat.chancy.AutoFallbackExecutor routes it there)"
