"""Verdict rules on probe results built by hand (no interpreter needed)."""

from __future__ import annotations

import pytest

from subcompat.discover import Edge, ModuleInfo, ModuleTree
from subcompat.probe import Interpreter, ProbeResult, Trial
from subcompat.route import Policy, route_for
from subcompat.verdict import decide, explain, toolchain_of

INTERP = Interpreter(
    "3.13.0", "cpython", "cpython-313", "", "3.13.0 build", "/py", "_interpreters", None, True
)
SUBMSG = "module {} does not support loading in subinterpreters"


def result(trials, modules=(), edges=None, loaded=()):
    tree = ModuleTree("app.job", tuple(modules), edges or {})
    return ProbeResult("app.job", INTERP, tree, tuple(trials), 0.1, frozenset(loaded))


def fail(name, file="/s/x.so"):
    return {"name": name, "file": file, "phase": "create", "type": "ImportError", "msg": SUBMSG.format(name)}


EXT = ModuleInfo("lib._core", "/s/lib/_core.so", "third_party", True, "lib", "1.2", None)
JOB = ModuleInfo("app.job", "/a/app/job.py", "first_party")
EDGES = {"lib": Edge("app.job", "/a/app/job.py", 3), "lib._core": Edge("lib", "/s/lib/__init__.py", 1)}


def test_clean_job_is_compatible_and_routes_to_subinterpreter():
    v = decide(result([Trial("job", "app.job", "ok")], [JOB]))
    assert v.verdict == "compatible"
    assert route_for(v).route == "subinterpreter"
    assert v.files == ("/a/app/job.py",)


def test_wrapped_failure_with_short_name_maps_to_dotted_module():
    error = {
        "type": "ImportError",
        "msg": "lib failed to import its C core",
        "chain": [
            {"type": "ImportError", "msg": "lib failed to import its C core"},
            {"type": "ImportError", "msg": SUBMSG.format("_core")},
        ],
    }
    v = decide(
        result([Trial("job", "app.job", "failed", error), Trial("main", "app.job", "ok")], [JOB, EXT], EDGES)
    )
    assert v.verdict == "incompatible"
    (c,) = v.culprits
    assert (c.module, c.distribution, c.version) == ("lib._core", "lib", "1.2")
    assert c.chain == ("app.job", "lib", "lib._core")
    assert (c.import_file, c.import_line) == ("/a/app/job.py", 3)


def test_swallowed_failure_is_degraded_and_routes_to_fallback_by_default():
    trials = [
        Trial("job", "app.job", "ok", failures=(fail("lib._core", EXT.file),)),
        Trial("main", "app.job", "ok"),
    ]
    v = decide(result(trials, [JOB, EXT], EDGES))
    assert v.verdict == "degraded"
    assert [d.module for d in v.degraded] == ["lib._core"]
    assert route_for(v).route == "fallback"
    assert route_for(v, Policy(degraded="subinterpreter")).route == "subinterpreter"


def test_failure_then_success_in_same_interpreter_is_incompatible():
    trials = [
        Trial("job", "app.job", "ok", failures=(fail("lib._core", EXT.file),)),
        Trial("main", "app.job", "ok"),
    ]
    v = decide(result(trials, [JOB, EXT], EDGES, loaded={"lib._core"}))
    assert v.verdict == "incompatible"
    assert "gh-104621" in v.culprits[0].reason


def test_failure_everywhere_is_error():
    err = {"type": "ModuleNotFoundError", "msg": "No module named 'app'"}
    v = decide(result([Trial("job", "app.job", "failed", err), Trial("main", "app.job", "failed", err)]))
    assert v.verdict == "error"
    assert "No module named 'app'" in v.reason


def test_crash_names_the_breadcrumb_extension_and_signal():
    crash = Trial(
        "job",
        "app.job",
        "crash",
        {"type": "crash", "msg": "killed by signal 11 (SIGSEGV)"},
        culprit={"name": "lib._core", "file": EXT.file},
        signal=11,
    )
    v = decide(result([crash, Trial("main", "app.job", "ok")], [JOB, EXT], EDGES))
    assert v.verdict == "crash"
    assert v.culprits[0].module == "lib._core" and "SIGSEGV" in v.culprits[0].reason


@pytest.mark.parametrize(("how", "warned"), [("function", True), ("function (optional)", False)])
def test_missing_lazy_dependency_warns_unless_optional(how, warned):
    """A broken deploy is a warning (fails under --strict); an import in a try that
    catches ImportError is optional, and its absence only a note."""
    lazy = Trial(
        "lazy",
        "some_dep",
        "missing",
        {"type": "ModuleNotFoundError", "msg": "no"},
        edge=Edge("app.job", "/a/app/job.py", 9, how),
    )
    v = decide(result([Trial("job", "app.job", "ok"), lazy], [JOB]))
    assert v.verdict == "compatible"
    assert [("some_dep" in w) for w in v.warnings] == ([True] if warned else [])
    assert [("some_dep" in n) for n in v.notes] == ([] if warned else [True])


def test_unsupported_interpreter():
    old = Interpreter("3.11.7", "cpython", "cpython-311", "", "b", "/py", None, "too old", False)
    v = decide(ProbeResult("app.job", old, ModuleTree("app.job")))
    assert v.verdict == "unsupported" and v.reason == "too old"


def test_explain_classifications():
    assert explain({"msg": SUBMSG.format("x")}, True, None)[1] == "multi-phase-no-gil"
    assert explain({"msg": SUBMSG.format("x")}, False, "Cython")[0].endswith("built with Cython")
    assert explain({"msg": "PyO3 modules do not yet support subinterpreters"}, None, None)[1] == "pyo3"
    # 3.13.x runs a single-phase init in the main interpreter and wraps what it raised there
    wrapped = {"type": "ImportError", "msg": "failed to import from subinterpreter due to exception"}
    assert explain(wrapped, False, "mypyc") == (
        "single-phase init (legacy PyInit, no module state): never loads in an isolated interpreter; "
        "built with mypyc",
        "single-phase",
    )
    assert explain(wrapped, None, None)[1] is None  # not a known single-phase file: as raised


def test_toolchain_markers(tmp_path):
    f = tmp_path / "x.so"
    f.write_bytes(b"\0" * (1 << 20) + b"__pyx_module_is_main" + b"\0" * 10)
    assert toolchain_of(str(f)) == "Cython"
    f.write_bytes(b"nothing here")
    assert toolchain_of(str(f)) is None
    assert toolchain_of(str(tmp_path / "absent.so")) is None


def _whole_file_toolchain(path):
    from subcompat.verdict import _TOOLCHAINS

    with open(path, "rb") as fh:
        data = fh.read()
    return next((name for marker, name in _TOOLCHAINS if marker in data), None)


def test_toolchain_from_elf_string_sections_matches_a_whole_file_scan():
    """Reading only the string/symbol sections gives the answer a full read gives, on
    every extension binary installed in this environment."""
    import glob
    import sysconfig

    roots = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    binaries = sorted({f for root in roots for f in glob.glob(f"{root}/**/*.so", recursive=True)})
    assert binaries, "no extension binaries installed in the test environment"
    answers = {f: toolchain_of(f) for f in binaries}
    assert answers == {f: _whole_file_toolchain(f) for f in binaries}
    assert "Cython" in answers.values()  # msgpack


def test_toolchain_of_a_file_that_is_not_elf_reads_it_whole(tmp_path):
    blob = tmp_path / "ext.pyd"
    blob.write_bytes(b"MZ" + b"\0" * 5000 + b"__pyx_module_is_main")
    assert toolchain_of(str(blob)) == "Cython"
    assert toolchain_of(str(tmp_path / "missing.so")) is None


LIB = ModuleInfo("lib", "/s/lib/__init__.py", "third_party", False, "lib", "1.2", None)


def name_trial(status, how="attribute", **error):
    return Trial(
        "name",
        "lib.CFast",
        status,
        {"type": "AttributeError", "msg": "no such attribute in a sub-interpreter", **error},
        edge=Edge("app.job", "/a/app/job.py", 7, how),
    )


def test_c_only_name_is_incompatible_and_names_its_accelerator():
    trials = [
        Trial("job", "app.job", "ok", failures=(fail("lib._core", EXT.file),)),
        Trial("main", "app.job", "ok"),
        name_trial("failed"),
    ]
    v = decide(result(trials, [JOB, LIB, EXT], EDGES))
    assert v.verdict == "incompatible"
    (c,) = v.culprits
    assert (c.module, c.kind, c.accelerator) == ("lib.CFast", "c-only-name", "lib._core")
    assert (c.distribution, c.version, c.import_file, c.import_line) == ("lib", "1.2", "/a/app/job.py", 7)
    assert "`lib.CFast` raises AttributeError" in c.reason
    assert [d.module for d in v.degraded] == ["lib._core"]
    assert route_for(v).route == "fallback"


def test_c_only_name_the_job_import_stopped_on_leaves_its_extension_degraded():
    error = {"type": "ImportError", "msg": "cannot import name 'CFast' from 'lib'"}
    trials = [
        Trial("job", "app.job", "failed", error, failures=(fail("lib._core", EXT.file),)),
        Trial("main", "app.job", "ok"),
        name_trial("failed", how="from", type="ImportError", at_import=True),
    ]
    v = decide(result(trials, [JOB, LIB, EXT], EDGES))
    assert v.verdict == "incompatible"
    assert [c.module for c in v.culprits] == ["lib.CFast"]
    assert "`from lib import CFast` raises ImportError" in v.culprits[0].reason
    assert [d.module for d in v.degraded] == ["lib._core"]


def test_a_name_missing_everywhere_changes_nothing():
    trials = [Trial("job", "app.job", "ok"), Trial("main", "app.job", "ok"), name_trial("missing")]
    v = decide(result(trials, [JOB, LIB]))
    assert v.verdict == "compatible" and v.culprits == ()


OK_EXT = ModuleInfo("lib._fast", "/s/lib/_fast.so", "third_party", True, "lib", "1.2", None)


def test_shared_state_in_two_live_interpreters_is_incompatible():
    shared = Trial(
        "pair",
        "lib._fast",
        "failed",
        {
            "type": "shared",
            "msg": "shares process-wide state between two live interpreters: module attribute x",
        },
        file=OK_EXT.file,
    )
    v = decide(result([Trial("job", "app.job", "ok"), shared], [JOB, OK_EXT], loaded={"lib._fast"}))
    assert v.verdict == "incompatible"
    (c,) = v.culprits
    assert (c.module, c.kind, c.distribution) == ("lib._fast", "shared-state", "lib")
    (ext,) = v.extensions
    assert ext.verdict == "incompatible" and "two live interpreters" in ext.message


def test_an_extension_is_cached_compatible_only_after_the_two_interpreter_check():
    job = Trial("job", "app.job", "ok")
    unchecked = decide(result([job], [JOB, OK_EXT], loaded={"lib._fast"}))
    assert unchecked.verdict == "compatible" and unchecked.extensions == ()
    passed = decide(result([job, Trial("pair", "lib._fast", "ok")], [JOB, OK_EXT], loaded={"lib._fast"}))
    assert [(e.module, e.verdict) for e in passed.extensions] == [("lib._fast", "compatible")]


def test_a_two_interpreter_check_the_budget_cut_short_decides_only_when_nothing_else_did():
    budget = Trial("pair", "lib._fast", "timeout", {"type": "budget", "msg": "timeout: probe budget used up"})
    r = result([Trial("job", "app.job", "ok"), budget], [JOB, OK_EXT], loaded={"lib._fast"})
    v = decide(r)
    assert v.verdict == "timeout" and r.transient == "a time limit"
    failed = Trial("job", "app.job", "failed", {"type": "ImportError", "msg": SUBMSG.format("x")})
    v = decide(result([failed, Trial("main", "app.job", "ok"), budget], [JOB, OK_EXT]))
    assert v.verdict == "incompatible"


def test_an_accelerator_only_a_main_interpreter_loaded_is_degraded():
    alone = Trial("extension", "lib._core", "failed", {"type": "ImportError", "msg": SUBMSG.format("_core")})
    trials = [Trial("job", "app.job", "ok"), Trial("main", "app.job", "ok"), alone]
    tree = ModuleTree("app.job", (JOB, LIB, EXT), EDGES)
    r = ProbeResult(
        "app.job", INTERP, tree, tuple(trials), 0.1, frozenset(), skipped=frozenset({"lib._core"})
    )
    v = decide(r)
    assert v.verdict == "degraded"
    (d,) = v.degraded
    assert d.module == "lib._core" and "never tried in the sub-interpreter" in d.reason
    assert (d.import_file, d.import_line) == ("/a/app/job.py", 3)


def test_a_verdict_decided_by_the_trial_cap_names_the_cap_not_a_time_limit():
    from subcompat.probe import MAX_TRIALS, TRIAL_CAP

    capped = Trial(
        "lazy", "app.more", "timeout", {"type": "budget", "msg": f"{TRIAL_CAP} reached ({MAX_TRIALS})"}
    )
    r = result([Trial("job", "app.job", "ok"), capped], [JOB])
    assert r.transient == "the trial cap"
