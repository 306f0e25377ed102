"""[tool.subcompat] config, baselines and the cross-Python matrix."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from subcompat import baseline, config, matrix
from subcompat.report import Report
from subcompat.verdict import Culprit, ExtensionVerdict, Verdict


def write_pyproject(tmp_path, body: str):
    (tmp_path / "pyproject.toml").write_text(body)
    return tmp_path


def test_config_loads_and_expands_packages_without_importing(tmp_path):
    write_pyproject(
        tmp_path,
        '[tool.subcompat]\njobs = ["app.jobs", "app.single"]\nfallback = "thread"\n'
        'timeout = 5\nignore = [{module = "x._c", reason = "known"}]\n',
    )
    (tmp_path / "app" / "jobs" / "sub").mkdir(parents=True)
    for rel in (
        "app/__init__.py",
        "app/jobs/__init__.py",
        "app/jobs/a.py",
        "app/jobs/sub/__init__.py",
        "app/jobs/sub/b.py",
        "app/single.py",
    ):
        (tmp_path / rel).write_text("raise SystemExit('imported!')\n")
    cfg = config.load(tmp_path / "app")
    assert cfg.jobs == ("app.jobs", "app.single") and cfg.fallback == "thread" and cfg.timeout == 5.0
    assert cfg.ignore == (config.Override("x._c", "known"),)
    assert config.expand_jobs(cfg.jobs, [str(tmp_path)]) == [
        "app.jobs",
        "app.jobs.a",
        "app.jobs.sub",
        "app.jobs.sub.b",
        "app.single",
    ]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('jobs = "app"', "tool.subcompat.jobs"),
        ('fallback = "fork"', "tool.subcompat.fallback"),
        ("degraded = 1", "tool.subcompat.degraded"),
        ("timeout = 0", "tool.subcompat.timeout"),
        ('ignore = [{module = "x"}]', "tool.subcompat.ignore[0]"),
        ('assume_incompatible = ["x"]', "tool.subcompat.assume_incompatible[0]"),
        ("colour = true", "tool.subcompat.colour"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, body, key):
    write_pyproject(tmp_path, f"[tool.subcompat]\n{body}\n")
    with pytest.raises(config.ConfigError) as err:
        config.load(tmp_path)
    assert err.value.key == key


def _check_json(tmp_path, *args):
    return subprocess.run(
        [sys.executable, "-m", "subcompat", "check", "json", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "SUBCOMPAT_CACHE_DIR": str(tmp_path)},
    )


def test_invalid_config_is_one_line_exit_2(tmp_path):
    write_pyproject(tmp_path, "[tool.subcompat]\ntimeout = -1\n")
    proc = _check_json(tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "subcompat: error: tool.subcompat.timeout: must be a positive number of seconds up to 86400, not -1"
    )


@pytest.mark.parametrize("body", ["timeout = nan", "timeout = inf", "timeout = 1e308", "memory = 12"])
def test_unusable_limits_in_config_are_one_line_exit_2(tmp_path, body):
    write_pyproject(tmp_path, f"[tool.subcompat]\n{body}\n")
    proc = _check_json(tmp_path)
    key = body.split()[0]
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"subcompat: error: tool.subcompat.{key}: must be ")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "args", [["--timeout", "nan"], ["--timeout", "inf"], ["--timeout", "1e308"], ["--memory", "-5"]]
)
def test_unusable_limits_on_the_command_line_are_one_line_exit_2(tmp_path, args):
    proc = _check_json(tmp_path, *args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("subcompat: error: argument ")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_overrides_ignore_and_assume_incompatible():
    c = Culprit("x._c", None, "x", "1", "single-phase")
    verdicts = [
        Verdict("a", "incompatible", "3.13.0", culprits=(c,)),
        Verdict(
            "b", "compatible", "3.13.0", extensions=(ExtensionVerdict("legacy._ext", "/l.so", "compatible"),)
        ),
    ]
    cfg = config.Config(
        ignore=(config.Override("x", "fine"),),
        assume_incompatible=(config.Override("legacy", "segfaults under load"),),
    )
    a, b = config.apply_overrides(verdicts, cfg)
    assert a.verdict == "compatible" and a.culprits == () and "ignored culprit x._c: fine" in a.notes
    assert b.verdict == "incompatible" and b.culprits[0].module == "legacy._ext"
    assert "segfaults under load" in b.culprits[0].reason


def report(*entries):
    return Report(
        "3.13.0",
        tuple(
            Verdict(t, v, "3.13.0", culprits=tuple(Culprit(m, None, None, None, "r") for m in ms))
            for t, v, ms in entries
        ),
    )


def test_baseline_regressions_and_improvements(tmp_path):
    old = report(("a", "compatible", ()), ("b", "incompatible", ("x",)), ("c", "incompatible", ("y",)))
    path = tmp_path / "base.json"
    path.write_text(json.dumps(old.to_json()))
    new = report(
        ("a", "incompatible", ("z",)),
        ("b", "compatible", ()),
        ("c", "incompatible", ("y", "w")),
        ("d", "compatible", ()),
    )
    cmp = baseline.compare(new, baseline.load(str(path)))
    assert [c.target for c in cmp.regressions] == ["a", "c"]
    assert cmp.regressions[1].new_culprits == ("w",)
    assert [c.target for c in cmp.improvements] == ["b"]
    assert cmp.improvements[0].gone_culprits == ("x",)
    assert baseline.compare(old, baseline.load(str(path))).regressions == ()


@pytest.mark.parametrize("content", ["{not json", json.dumps({"schema": 7, "modules": []}), json.dumps([1])])
def test_bad_baseline_is_a_clear_error(tmp_path, content):
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(baseline.BaselineError, match="baseline"):
        baseline.load(str(path))


def test_matrix_merges_two_reports(tmp_path):
    r1 = report(("a", "compatible", ()), ("b", "incompatible", ("x._c",))).to_json()
    r2 = dict(report(("a", "compatible", ()), ("c", "degraded", ())).to_json(), python="3.14.0")
    paths = []
    for i, r in enumerate((r2, r1)):
        p = tmp_path / f"r{i}.json"
        p.write_text(json.dumps(r))
        paths.append(str(p))
    table = matrix.merge([matrix.load_report(p) for p in paths])
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert rows[0] == "| Target | Python 3.13.0 | Python 3.14.0 |"
    assert "| `a` | compatible | compatible |" in rows
    assert "| `b` | incompatible (`x._c`) | – |" in rows
    out = tmp_path / "m.md"
    proc = subprocess.run(
        [sys.executable, "-m", "subcompat", "matrix", *paths, "-o", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 0 and out.read_text().strip() == table.strip()
    bad = subprocess.run(
        [sys.executable, "-m", "subcompat", "matrix", str(tmp_path / "nope.json")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("subcompat: error: cannot read")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[tool.subcompat]\njobs = ["a"]\n', True),
        ('[tool.subcompat] # ours\njobs = ["a"]\n', True),
        ('[ tool . "subcompat" ]\njobs = ["a"]\n', True),
        ("[tool.subcompat.extra]\nx = 1\n", True),
        ('[tool]\nsubcompat = { jobs = ["a"] }\n', True),
        ('[tool]\nsubcompat.jobs = ["a"]\n', True),
        ('tool.subcompat.jobs = ["a"]\n', True),
        ('tool = { subcompat = { jobs = ["a"] } }\n', True),
        ('[project]\nname = "x"\n', False),
        ('[project.scripts]\nsubcompat = "subcompat.cli:main"\n', False),
        ('[tool.setuptools.dynamic]\nversion = { attr = "subcompat.__version__" }\n', False),
        ('[project]\ndependencies = ["subcompat[chancy]"]\n', False),
    ],
)
def test_prefilter_never_hides_a_subcompat_table(text, expected):
    """The parser is skipped only when there is certainly no table; each True case is also
    what tomllib finds."""
    import tomllib

    from subcompat.config import may_configure

    assert may_configure(text.encode()) is expected
    assert ("subcompat" in tomllib.loads(text).get("tool", {})) is expected
