"""The JSON report's one reader (report.read_report), next to its writer, and how each
of its users (baseline, matrix, chancy's verdict file) words what it refuses."""

from __future__ import annotations

import json
import sys

import pytest
from _req import require_or_skip

from subcompat import baseline, matrix, report
from subcompat.verdict import Culprit, Verdict

try:
    from subcompat.chancy import load_verdicts
except ImportError as exc:  # chancy is an optional dependency
    load_verdicts = None
    _why = str(exc)


def _written(tmp_path, data):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_what_the_writer_writes_the_reader_reads(tmp_path):
    culprit = Culprit("lib._c", "/s/lib/_c.so", "lib", "1", "single-phase")
    written = report.Report("3.13.0", (Verdict("a:job", "incompatible", "3.13.0", culprits=(culprit,)),))
    assert json.loads(report.render_json(written)) == written.to_json()
    data = report.read_report(_written(tmp_path, written.to_json()))
    assert data["modules"][0]["culprits"] == [culprit.to_json()]
    assert baseline.load(_written(tmp_path, data)) == {"a:job": ("incompatible", frozenset({"lib._c"}))}


def test_what_many_modules_share_is_written_once_and_read_into_each(tmp_path):
    """Schema 2: a culprit, a file, an extension shared by many modules is one table entry;
    each module refers to it, and the reader gives each module its own copy back. A
    reference that is no index of its table reads as None; schema 1 reads as it was."""
    shared = Culprit("np._core", "/s/np/_core.so", "numpy", "2", "single-phase")
    own = Culprit("pd._libs.x", "/s/pd/x.so", "pandas", "3", "single-phase")
    verdicts = tuple(
        Verdict(
            f"pd.m{i}",
            "incompatible",
            "3.14.0",
            culprits=(shared, own) if i else (shared,),
            files=("/s/np/_core.so",),
        )
        for i in range(50)
    )
    raw = report.Report("3.14.0", verdicts).to_json()
    assert raw["schema"] == 2 and len(raw["culprits"]) == 2 and len(raw["files"]) == 1
    assert raw["modules"][3]["culprits"] == "0-1" and raw["modules"][0]["culprits"] == "0"  # runs of indices
    data = report.read_report(_written(tmp_path, raw))
    assert [len(m["culprits"]) for m in data["modules"]] == [1] + [2] * 49
    assert all(
        m["culprits"][0] == shared.to_json() and m["files"] == ["/s/np/_core.so"] for m in data["modules"]
    )
    assert report.read_report(_written(tmp_path, data)) == data  # read, written, read again: the same
    raw["modules"][1]["culprits"] = [0, 7]
    assert report.read_report(_written(tmp_path, raw))["modules"][1]["culprits"] == [shared.to_json(), None]
    for bad in ("0-99999999", "x", "1-", "3-1"):  # not runs, or more than the table holds: one None
        raw["modules"][1]["culprits"] = bad
        assert report.read_report(_written(tmp_path, raw))["modules"][1]["culprits"] == [None], bad
    old = {"schema": 1, "python": "3.13.0", "modules": [{"target": "a", "culprits": [own.to_json()]}]}
    assert report.read_report(_written(tmp_path, old)) == old
    text = report.render_json(report.Report("3.14.0", verdicts))
    assert (
        text.count('"/s/np/_core.so"') == 2 and len(text.splitlines()) < len(verdicts) + 20
    )  # a line a module


@pytest.mark.parametrize(
    ("data", "schema", "modules"),
    [([1], None, False), ({"schema": 7, "modules": []}, 7, False), ({"schema": 1, "modules": {}}, 1, True)],
)
def test_not_a_report_is_one_error_each_reader_words(tmp_path, data, schema, modules):
    path = _written(tmp_path, data)
    with pytest.raises(report.ReportFormatError) as caught:
        report.read_report(path)
    assert (caught.value.schema, caught.value.modules) == (schema, modules)
    with pytest.raises(baseline.BaselineError, match="^baseline "):
        baseline.load(path)
    with pytest.raises(matrix.MatrixError, match="is not a subcompat JSON report"):
        matrix.load_report(path)  # a 'modules' object used to reach merge() and raise there
    if sys.version_info < (3, 13):  # a property of the env: tox installs chancy on 3.13+ only
        return
    require_or_skip(
        load_verdicts is not None, f"subcompat.chancy is not importable: {load_verdicts is None and _why}"
    )
    refused = load_verdicts(path).refused
    assert refused == (
        "no 'modules' list"
        if modules
        else f"schema {caught.value.found!r}, expected 2 (subcompat check --format json)"
    )
