"""Stage 5b, report: render a check run for people (text, markdown) and tools (json, junit, github)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from functools import partial

from subcompat import __version__
from subcompat.route import DEFAULT_POLICY, Policy, advice, route_for
from subcompat.verdict import (
    COMPATIBLE,
    CRASH,
    DEGRADED,
    ERROR,
    INCOMPATIBLE,
    TIMEOUT,
    UNSUPPORTED,
    Culprit,
    ExtensionVerdict,
    Verdict,
)

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import IO, Any

#: 2: each culprit, extension, file and distribution stamp is written once, in a table at
#: the top, and each module refers to it by its index in that table (1: every module held
#: its own copies; a package of 1,500 modules repeated the same 55 culprits 1,500 times).
JSON_SCHEMA = 2
READ_SCHEMAS = (1, 2)  # what ``parse_report`` reads (schema 1 as it was written)
#: the tables of schema 2, each a list; a module's field of the same name gives indices into
#: it as runs, in order ("0-54,57": entries 0 to 54, then 57; a list of ints reads too)
TABLES = ("culprits", "degraded", "extensions", "files", "dist_stamps")

EXIT_OK = 0
EXIT_INCOMPATIBLE = 1
EXIT_USAGE = 2
EXIT_UNSUPPORTED = 3


@dataclass(frozen=True)
class Report:
    """One check run: the verdicts and how they were obtained."""

    python: str
    verdicts: tuple[Verdict, ...]
    policy: Policy = DEFAULT_POLICY
    elapsed_s: float = 0.0
    probed: int = 0

    def exit_code(self, *, strict: bool = False) -> int:
        """2 if any target is broken everywhere (fix that first), 1 if any cannot run
        in a sub-interpreter (degraded, or a warning such as a missing dependency, too with
        ``strict``), 3 if this Python has no sub-interpreters, else 0."""
        kinds = {v.verdict for v in self.verdicts}
        if ERROR in kinds:
            return EXIT_USAGE
        bad = {INCOMPATIBLE, CRASH, TIMEOUT} | ({DEGRADED} if strict else set())
        if kinds & bad or (strict and any(v.warnings for v in self.verdicts)):
            return EXIT_INCOMPATIBLE
        if UNSUPPORTED in kinds:
            return EXIT_UNSUPPORTED
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        """Schema 2: what many modules share is written once (``TABLES``); ``parse_report``
        gives each module its own copies back."""
        tables: dict[str, list[Any]] = {name: [] for name in TABLES}
        index: dict[str, dict[Any, int]] = {name: {} for name in TABLES}

        def ref(table: str, key: Any, value: Callable[[], Any] | None = None) -> int:
            """The index of ``key`` (a frozen record, a string) in ``table``, added on first
            sight as ``value()`` (a string: as it is)."""
            found = index[table].get(key)
            if found is None:
                found = index[table][key] = len(tables[table])
                tables[table].append(key if value is None else value())
            return found

        def ext(e: ExtensionVerdict) -> dict[str, Any]:
            return {"module": e.module, "verdict": e.verdict, "distribution": e.distribution}

        lists: dict[tuple[str, int], tuple[tuple[Any, ...], str]] = {}

        def refs(table: str, items: tuple[Any, ...], value: Callable[[Any], Any] | None = None) -> str:
            """``items`` as runs of indices; once per list object (the modules of one package
            share their culprit and extension lists, and a frozen record's hash is not kept)."""
            hit = lists.get((table, id(items)))
            if hit is not None and hit[0] is items:
                return hit[1]
            runs = _runs([ref(table, i, None if value is None else partial(value, i)) for i in items])
            lists[(table, id(items))] = (items, runs)  # holds items: its id is not reused
            return runs

        modules = [
            {
                "target": v.target,
                "verdict": v.verdict,
                "reason": v.reason,
                "culprits": refs("culprits", v.culprits, Culprit.to_json),
                "degraded": refs("degraded", v.degraded, Culprit.to_json),
                "route": route_for(v, self.policy).route,
                "advice": advice(v, self.policy),
                "notes": list(v.notes),
                "warnings": list(v.warnings),
                "extensions": refs("extensions", v.extensions, ext),
                "elapsed_s": round(v.elapsed_s, 4),
                "cached": v.cached,
                "transient": v.transient or None,
                "files": refs("files", v.files),
                "dist_stamps": refs("dist_stamps", v.dist_stamps),
            }
            for v in self.verdicts
        ]
        return {
            "schema": JSON_SCHEMA,
            "tool": f"subcompat {__version__}",
            "python": self.python,
            "elapsed_s": round(self.elapsed_s, 4),
            **tables,
            "modules": modules,
        }


_COLOURS = {
    COMPATIBLE: "32",
    DEGRADED: "33",
    INCOMPATIBLE: "31",
    CRASH: "1;31",
    TIMEOUT: "31",
    ERROR: "35",
    UNSUPPORTED: "2",
}


def use_colour(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return hasattr(stream, "isatty") and stream.isatty()


def _runs(refs: list[int]) -> str:
    """Indices as runs, in order: [3, 4, 5, 9, 1] -> "3-5,9,1" (modules of one package list
    the same long stretches of each table)."""
    parts: list[str] = []
    start = prev = None
    for r in [*refs, None]:
        if prev is not None and r == prev + 1:
            prev = r
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = r
    return ",".join(parts)


def _unruns(text: str, size: int) -> list[int | None] | None:
    """``_runs`` read back against a table of ``size`` entries: an index outside it is
    None; None for text that is not runs, or that lists more than the table holds."""
    out: list[int | None] = []
    for part in text.split(",") if text else ():
        first, _, last = part.partition("-")
        if not (first.isdigit() and (last.isdigit() or not _)):
            return None
        lo, hi = int(first), int(last or first)
        if hi < lo or len(out) + hi - lo >= max(size, 1) * 2:  # a bound on what a line can claim
            return None
        out.extend(i if i < size else None for i in range(lo, hi + 1))
    return out


def render_json(report: Report) -> str:
    """One line per table entry and per module: a diff shows which module changed, and
    the size follows what the report says (not an indented line per index)."""
    data = report.to_json()
    parts = []
    for key, value in data.items():
        if isinstance(value, list) and value:
            rows = ",\n    ".join(json.dumps(x, ensure_ascii=False) for x in value)
            parts.append(f"{json.dumps(key)}: [\n    {rows}\n  ]")
        else:
            parts.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n  " + ",\n  ".join(parts) + "\n}"


# -- reading a JSON report back (baseline, matrix, chancy's verdict file) ------------------


class ReportFormatError(ValueError):
    """Parsed JSON that is not a report ``Report.to_json`` writes: ``schema`` is what an
    object says (None for anything else), ``found`` that or the JSON type; ``modules``
    says whether the schema was right and only the list of entries is missing. Each
    reader words this for its own users."""

    def __init__(self, data: object, *, modules: bool) -> None:
        self.schema = data.get("schema") if isinstance(data, dict) else None
        self.found = self.schema if isinstance(data, dict) else type(data).__name__
        self.modules = modules
        super().__init__("no 'modules' list" if modules else f"schema {self.found!r}, expected {JSON_SCHEMA}")


def parse_report(data: object) -> dict[str, Any]:
    """``data`` (parsed JSON) as a report with a list of entries, each with its own copies
    of what schema 2 shares (a reference that is not an index of its table becomes None;
    what is no reference stays, so a report read and written again reads the same), or
    ``ReportFormatError``; the entries are left for each reader to judge."""
    if not isinstance(data, dict) or data.get("schema") not in READ_SCHEMAS:
        raise ReportFormatError(data, modules=False)
    if not isinstance(data.get("modules"), list):
        raise ReportFormatError(data, modules=True)
    if data["schema"] == 1:
        return data
    tables: dict[str, list[Any]] = {}
    for name in TABLES:
        table = data.get(name)
        tables[name] = table if isinstance(table, list) else []

    def resolve(table: list[Any], refs: object) -> object:
        if isinstance(refs, str):  # runs of indices, as schema 2 writes them
            found = _unruns(refs, len(table))
            return [None] if found is None else [None if i is None else table[i] for i in found]
        if not isinstance(refs, list):
            return refs
        out: list[Any] = []
        for r in refs:
            if type(r) is int:  # noqa: E721 - a bool is no reference
                out.append(table[r] if 0 <= r < len(table) else None)
            else:  # already a copy (a report read once and written again): the reader judges it
                out.append(r)
        return out

    modules = []
    for entry in data["modules"]:
        if isinstance(entry, dict):
            entry = dict(entry)
            for name, table in tables.items():
                if name in entry:
                    entry[name] = resolve(table, entry[name])
        modules.append(entry)
    out = {k: v for k, v in data.items() if k not in TABLES}
    out["modules"] = modules
    return out


def read_report(path: str) -> dict[str, Any]:
    """The report in the file ``path``: OSError if it cannot be read, ValueError (a
    ``ReportFormatError`` among them) if it is not JSON or not a report."""
    from subcompat._bounded import Refused, read_regular

    try:  # a FIFO or /dev/zero given as a report must not hang or exhaust the reader
        raw, _ = read_regular(path, MAX_REPORT_BYTES)
    except Refused as exc:
        raise OSError(0, str(exc), path) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except RecursionError:
        raise ValueError("nested too deeply") from None
    return parse_report(data)


MAX_REPORT_BYTES = 256 << 20  # a report of 10,000 targets is a few MB


#: culprits (and degraded extensions) the text report shows per target; ``verbose``: all
TEXT_CULPRITS = 5


def render_text(report: Report, *, colour: bool = False, verbose: bool = False) -> str:
    """What a person acts on: per target the first culprits, then "and N more" (the full
    list with ``verbose``, ``--verbose``; the JSON report always has it)."""

    def paint(text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if colour else text

    cached = sum(1 for v in report.verdicts if v.cached)
    lines = [
        f"subcompat {__version__} · Python {report.python} · {len(report.verdicts)} target(s)"
        f" ({cached} from cache) · {report.elapsed_s:.2f}s"
    ]
    width = max((len(v.target) for v in report.verdicts), default=10)
    for v in report.verdicts:
        label = paint(f"{v.verdict:<12}", _COLOURS.get(v.verdict, "0"))
        tail = "cached" if v.cached else f"{v.elapsed_s:.2f}s"
        lines.append(f"{label} {v.target:<{width}}  {tail}")
        if v.verdict in (ERROR, UNSUPPORTED) or (
            v.reason and not v.culprits and v.verdict != COMPATIBLE and not v.degraded
        ):
            lines.append(f"    {v.reason}")
        shown = len(v.culprits) + len(v.degraded) if verbose else TEXT_CULPRITS
        for c in v.culprits[:shown]:
            lines.extend(_culprit_lines(c, "✘", paint))
        for c in v.degraded[: max(0, shown - len(v.culprits))]:
            lines.extend(_culprit_lines(c, "~", paint))
        hidden = len(v.culprits) + len(v.degraded) - shown
        if hidden > 0:
            lines.append(paint(f"    … and {hidden} more (--verbose lists them all)", "2"))
        for warning in v.warnings:
            lines.append(paint(f"    ! warning: {warning}", "33"))
        for note in v.notes:
            lines.append(paint(f"    note: {note}", "2"))
        if v.verdict != COMPATIBLE:
            lines.append(f"    → {advice(v, report.policy)}")
    counts: dict[str, int] = {}
    for v in report.verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    warned = sum(1 for v in report.verdicts if v.warnings)
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no targets"
    lines.append(summary + (f" ({warned} with warnings: fails under --strict)" if warned else ""))
    return "\n".join(lines)


def _culprit_lines(c: Culprit, mark: str, paint: Any) -> list[str]:
    dist = f" ({c.distribution} {c.version})" if c.distribution else ""
    out = [f"    {mark} {c.module}{dist}: {c.reason}"]
    where = f"  ({c.import_file}:{c.import_line})" if c.import_file and c.import_line else ""
    if len(c.chain) > 1 or where:
        out.append(paint(f"      via {' → '.join(c.chain) or c.module}{where}", "2"))
    return out


_FAILING = (INCOMPATIBLE, CRASH, TIMEOUT)


def _culprit_summary(c: Culprit) -> str:
    dist = f" ({c.distribution} {c.version})" if c.distribution else ""
    return f"{c.module}{dist}: {c.reason}"


def render_markdown(report: Report) -> str:
    """A table for a PR comment, with a summary line."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    counts: dict[str, int] = {}
    for v in report.verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    lines = [
        f"**subcompat** on Python {report.python}: {len(report.verdicts)} target(s), {summary or 'none'}",
        "",
        "| Target | Verdict | Culprits | Advice |",
        "|---|---|---|---|",
    ]
    for v in report.verdicts:
        culprits = [_culprit_summary(c) for c in v.culprits]
        culprits += [f"(degraded) {_culprit_summary(c)}" for c in v.degraded]
        culprits += [f"(warning) {w}" for w in v.warnings]
        if not culprits and v.verdict not in (COMPATIBLE,):
            culprits = [v.reason]
        lines.append(
            f"| `{cell(v.target)}` | {v.verdict} | {cell('<br>'.join(culprits)) or '–'} "
            f"| {cell(advice(v, report.policy))} |"
        )
    return "\n".join(lines)


def render_junit(report: Report) -> str:
    """One testcase per target: CI systems show the culprits as test failures."""
    import xml.etree.ElementTree as ET

    failures = sum(1 for v in report.verdicts if v.verdict in _FAILING)
    errors = sum(1 for v in report.verdicts if v.verdict == ERROR)
    skipped = sum(1 for v in report.verdicts if v.verdict == UNSUPPORTED)
    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"subcompat (Python {report.python})",
        tests=str(len(report.verdicts)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=f"{report.elapsed_s:.3f}",
    )
    for v in report.verdicts:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"subcompat.py{report.python}",
            name=v.target,
            time=f"{v.elapsed_s:.3f}",
        )
        detail = "\n".join(
            f"{_culprit_summary(c)}\n  via {' -> '.join(c.chain) or c.module}"
            + (f" ({c.import_file}:{c.import_line})" if c.import_file else "")
            for c in (*v.culprits, *v.degraded)
        )
        if v.verdict in _FAILING:
            node = ET.SubElement(case, "failure", message=v.reason[:500], type=v.verdict)
            node.text = detail or v.reason
        elif v.verdict == ERROR:
            ET.SubElement(case, "error", message=v.reason[:500], type=v.verdict).text = v.reason
        elif v.verdict == UNSUPPORTED:
            ET.SubElement(case, "skipped", message=v.reason)
        elif v.degraded or v.warnings:
            warned = "".join(f"warning: {w}\n" for w in v.warnings)
            ET.SubElement(case, "system-out").text = warned + ("degraded:\n" + detail if detail else "")
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode")


def _gh_escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def render_github(report: Report) -> str:
    """Workflow annotations at the import line that pulls each culprit in."""
    out: list[str] = []
    for v in report.verdicts:
        title = _gh_escape(f"subcompat: {v.target}", prop=True)
        out.extend(f"::warning title={title}::{_gh_escape(w)}" for w in v.warnings)
        level = {DEGRADED: "warning", UNSUPPORTED: "notice"}.get(v.verdict, "error")
        if v.verdict == COMPATIBLE:
            continue
        culprits = (*v.culprits, *v.degraded) or (None,)
        for c in culprits:
            props = [f"title={_gh_escape(f'subcompat: {v.target} is {v.verdict}', prop=True)}"]
            if c is not None and c.import_file:
                path = c.import_file
                if os.path.isabs(path) and path.startswith(os.getcwd() + os.sep):
                    path = os.path.relpath(path)
                props.insert(0, f"file={_gh_escape(path, prop=True)}")
                if c.import_line:
                    props.insert(1, f"line={c.import_line}")
            message = _culprit_summary(c) if c is not None else v.reason
            message += f" -> {advice(v, report.policy)}"
            out.append(f"::{level} {','.join(props)}::{_gh_escape(message)}")
    return "\n".join(out)


RENDERERS = {
    "json": render_json,
    "markdown": render_markdown,
    "junit": render_junit,
    "github": render_github,
}
FORMATS = ("text", *RENDERERS)


def write(report: Report, fmt: str, stream: IO[str] = sys.stdout, *, verbose: bool = False) -> None:
    if fmt == "text":
        stream.write(render_text(report, colour=use_colour(stream), verbose=verbose) + "\n")
    else:
        stream.write(RENDERERS[fmt](report) + "\n")
