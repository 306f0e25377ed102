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
    data = report.read_report(_written(tmp_path, written.to_json()))
    assert data == json.loads(report.render_json(written))
    assert baseline.load(_written(tmp_path, data)) == {"a:job": ("incompatible", frozenset({"lib._c"}))}


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
        else f"schema {caught.value.found!r}, expected 1 (subcompat check --format json)"
    )
