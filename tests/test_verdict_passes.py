"""verdict.decide's passes, one at a time, on typed records (no interpreter needed)."""

from __future__ import annotations

from subcompat import verdict
from subcompat._records import Breadcrumb, ExtensionFailure, TrialError, parse_error
from subcompat.discover import Edge, ModuleInfo, ModuleTree
from subcompat.probe import Interpreter, ProbeResult, Trial

INTERP = Interpreter("3.13.0", "cpython", "cpython-313", "", "b", "/py", "_interpreters", None, True)
SUBMSG = "module {} does not support loading in subinterpreters"
EXT = ModuleInfo("lib._core", "/s/lib/_core.so", "third_party", True, "lib", "1.2", None)
JOB = ModuleInfo("app.job", "/a/app/job.py", "first_party")
EDGES = {"lib": Edge("app.job", "/a/app/job.py", 3), "lib._core": Edge("lib", "/s/lib/__init__.py", 1)}


def evidence(*trials, loaded=()):
    tree = ModuleTree("app.job", (JOB, EXT), EDGES)
    return verdict._Evidence(ProbeResult("app.job", INTERP, tree, trials, 0.1, frozenset(loaded)))


def failure(name="lib._core"):
    return ExtensionFailure(name, EXT.file, "ImportError", SUBMSG.format(name), "create")


def test_a_crash_under_way_in_an_extension_blames_the_breadcrumb():
    crash = Trial(
        "job", "app.job", "crash", TrialError("crash", "signal 11"), culprit=Breadcrumb("lib._core")
    )
    found = verdict._Findings()
    verdict._crashes_and_hangs(evidence(crash, Trial("main", "app.job", "ok")), found)
    assert (found.worst, list(found.culprits)) == ("crash", ["lib._core"])
    assert found.culprits["lib._core"].import_line == 3  # the first-party line that pulls it in


def test_a_crash_a_main_interpreter_shares_is_an_error_not_a_culprit():
    lost = TrialError("crash", "signal 11")
    trials = (Trial("job", "app.job", "crash", lost), Trial("main", "app.job", "crash", lost))
    found = verdict._Findings()
    verdict._crashes_and_hangs(evidence(*trials), found)
    assert not found.culprits and "crashes in a main interpreter too" in found.errors[0]


def test_budget_losses_leave_the_verdict_to_conclude():
    spent = Trial("pair", "lib._core", "timeout", TrialError("budget", "timeout: budget used up"))
    found = verdict._Findings()
    verdict._crashes_and_hangs(evidence(Trial("job", "app.job", "ok"), spent), found)
    assert found.worst == "compatible" and found.unfinished
    result = ProbeResult("app.job", INTERP, ModuleTree("app.job"), (spent,))
    assert verdict._conclude(result, found)[0] == "timeout"


def test_a_swallowed_failure_is_degraded_and_a_retried_one_incompatible():
    job = Trial("job", "app.job", "ok", failures=(failure(),))
    degraded = verdict._Findings()
    verdict._swallowed_failures(evidence(job), degraded)
    assert degraded.worst == "degraded" and degraded.degraded["lib._core"].reason.startswith(verdict.SKIPPED)
    retried = verdict._Findings()
    verdict._swallowed_failures(evidence(job, loaded={"lib._core"}), retried)
    assert retried.worst == "incompatible" and "gh-104621" in retried.culprits["lib._core"].reason


def test_the_job_failure_pass_names_the_extension_from_the_message_alone():
    error = TrialError("ImportError", SUBMSG.format("_core"))
    found = verdict._Findings()
    verdict._job_failure(
        evidence(Trial("job", "app.job", "failed", error), Trial("main", "app.job", "ok")), found
    )
    assert list(found.culprits) == ["lib._core"] and found.worst == "incompatible"


def test_raw_errors_are_parsed_once_into_records():
    raw = {
        "type": "ImportError",
        "msg": "m",
        "chain": [{"type": "MemoryError", "msg": ""}],
        "attr": ["a", "B"],
    }
    trial = Trial(
        "job", "app.job", "failed", raw, failures=({"name": "x", "file": None, "type": "E", "msg": ""},)
    )
    assert trial.error == parse_error(raw) and trial.error.is_memory_error
    assert trial.error.attr is not None and (trial.error.attr.module, trial.error.attr.name) == ("a", "B")
    assert trial.failures == (ExtensionFailure("x", None, "E", ""),)
    assert parse_error({"type": 3, "chain": "no", "attr": [1]}) == TrialError("Error")  # off-shape: defaults
