"""Command line: ``subcompat check``, ``subcompat cache show|clear|export|import``.

Exit codes: 0 every target compatible (or degraded, unless --strict); 1 a target is
incompatible, crashes or hangs in a sub-interpreter (with --baseline: only on a
regression); 2 usage error, invalid config, or a target that is broken in a normal
interpreter too (error verdict); 3 this Python has no isolated sub-interpreters
(unsupported). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from subcompat import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

    from subcompat.cache import Cache
    from subcompat.config import Config
    from subcompat.verdict import Verdict

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader went away (`| head`), as a shell reports it


class UsageError(Exception):
    """A one-line message for the user; exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse measures the terminal through shutil (3 ms of every start-up, help or not)."""

    def __init__(self, prog: str, **kwargs: object) -> None:
        if kwargs.get("width") is None:
            try:
                columns = int(os.environ["COLUMNS"])
            except (KeyError, ValueError):
                try:
                    columns = os.get_terminal_size(sys.stdout.fileno()).columns
                except (ValueError, OSError):
                    columns = 80
            kwargs["width"] = max(columns - 2, 40)
        super().__init__(prog, **kwargs)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="subcompat",
        description="May this job run in an isolated sub-interpreter?",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"subcompat {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    check = sub.add_parser(
        "check", formatter_class=_Formatter, help="probe job modules in fresh sub-interpreters"
    )
    check.add_argument(
        "targets",
        nargs="*",
        metavar="TARGET",
        help="dotted module, module:function, or a .py file (default: jobs in [tool.subcompat])",
    )
    check.add_argument(
        "--format",
        choices=("text", "json", "markdown", "junit", "github"),
        default="text",
        help="text for people (default), json for tools, markdown for a PR comment, "
        "junit for CI test views, github for workflow annotations",
    )
    check.add_argument(
        "--path",
        metavar="DIR",
        help="import targets from DIR alone (default: the directory of the nearest "
        "pyproject.toml, then the current directory)",
    )
    check.add_argument(
        "--baseline",
        metavar="FILE",
        help="a previous JSON report: exit 1 only on regressions (improvements are listed too)",
    )
    check.add_argument("--python", metavar="PATH", help="interpreter or venv python to probe")
    check.add_argument(
        "--cache-dir", metavar="DIR", help="default: $SUBCOMPAT_CACHE_DIR or the user cache dir"
    )
    check.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    check.add_argument(
        "--cache", metavar="URL", help="a postgresql:// verdict store shared by a fleet (default: config's)"
    )
    check.add_argument(
        "--timeout",
        type=_positive,
        default=None,
        metavar="S",
        help="wall-clock budget of one target's whole probe, in seconds (default 30, or the config's); "
        "sub-interpreter trials get half of it, a main-interpreter check of a hang the other half",
    )
    check.add_argument(
        "--memory",
        type=_memory,
        default=None,
        metavar="MIB",
        help="address-space limit of each probe worker in MiB, 0 for none (default 4096, or the config's)",
    )
    check.add_argument(
        "--jobs",
        type=_positive_int,
        default=None,
        metavar="N",
        help="probe children in parallel (default: CPU count)",
    )
    check.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        help="text report: every culprit of a target, not the first 5 and a count",  # report.TEXT_CULPRITS
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="exit 1 on degraded targets and on warnings (a missing dependency)",
    )
    check.add_argument(
        "--progress",
        choices=("auto", "always", "never"),
        default="auto",
        help="targets done / total and the one being probed, on stderr (auto: only on a terminal)",
    )
    check.add_argument(
        "--degraded",
        choices=("fallback", "subinterpreter"),
        default=None,
        help="where degraded jobs should run (for the advice and route; default: config, else fallback)",
    )
    check.add_argument(
        "--fallback",
        choices=("process", "thread"),
        default=None,
        help="the executor that runs jobs a sub-interpreter cannot (for the advice and route; "
        "default: config, else process)",
    )
    check.add_argument(
        "--runtime",
        choices=("none", "chancy"),
        default="none",
        help="subtract what this runtime loads in every sub-interpreter "
        "(chancy: its job wrapper imports chancy and psycopg)",
    )

    cache = sub.add_parser("cache", formatter_class=_Formatter, help="inspect or clear the verdict cache")
    cache.add_argument(
        "action",
        choices=("show", "clear", "export", "import"),
        help="show: list cached verdicts; clear: delete them; export: write them as JSON to stdout; "
        "import: read a file written by export",
    )
    cache.add_argument("file", nargs="?", metavar="FILE", help="import: a file written by export")
    cache.add_argument(
        "--cache-dir", metavar="DIR", help="default: $SUBCOMPAT_CACHE_DIR or the user cache dir"
    )
    cache.add_argument("--cache", metavar="URL", help="a postgresql:// verdict store (default: the config's)")
    cache.add_argument("--format", choices=("text", "json"), default="text", help="output format of show")

    matrix = sub.add_parser(
        "matrix",
        formatter_class=_Formatter,
        help="merge JSON reports from several Pythons into one markdown table",
    )
    matrix.add_argument(
        "reports", nargs="+", metavar="REPORT.json", help="`check --format json` reports, one per Python"
    )
    matrix.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    return parser


def _limit(text: str, parse: type, rule: str, unit: str) -> float:
    """``text`` as a number that the probe's own rule accepts (one rule for CLI and config)."""
    from subcompat import probe

    try:
        value: float = parse(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a {unit}: {text!r}") from None
    problem = getattr(probe, rule)(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def _positive(text: str) -> float:
    return _limit(text, float, "timeout_problem", "number")


def _memory(text: str) -> int:
    return int(_limit(text, int, "memory_problem", "whole number of MiB"))


class _Terminated(BaseException):
    """SIGTERM or SIGHUP: unwind (probe processes killed, scratch removed), then exit."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: object) -> None:
    raise _Terminated(signum)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _warn_one_line(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    print(f"subcompat: warning: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    warnings.showwarning = _warn_one_line
    import signal

    for signum in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(signum, _on_signal)
        except (ValueError, OSError):  # not the main thread (main() called from a library)
            pass
    try:
        try:
            args = build_parser().parse_args(argv)
        except SystemExit:  # --help, --version: printed, maybe into a closed pipe
            sys.stdout.flush()
            raise
        code = _run(args)
        sys.stdout.flush()  # a reader that went away is found here, not at interpreter exit
        return code
    except UsageError as exc:
        print(f"subcompat: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("subcompat: interrupted", file=sys.stderr)
        return 130
    except _Terminated as exc:
        import signal

        print(f"subcompat: stopped by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum


def _run(args: argparse.Namespace) -> int:
    if args.command == "check":
        return _check(args)
    if args.command == "cache":
        return _cache(args)
    if args.command == "matrix":
        return _matrix(args)
    build_parser().print_help()
    return EXIT_USAGE


_ASCII = str.maketrans({"✘": "x", "✔": "ok", "→": "->", "·": "-", "–": "-", "—": "-", "…": "...", "~": "~"})


class _AsciiStream:
    """A stdout that cannot encode the report's symbols (``PYTHONIOENCODING=ascii``, a C
    locale): they become ASCII, anything else a backslash escape, never an error."""

    def __init__(self, stream: TextIO, encoding: str) -> None:
        self.stream, self.encoding = stream, encoding

    def write(self, text: str) -> int:
        text = text.translate(_ASCII).encode(self.encoding, "backslashreplace").decode(self.encoding)
        return self.stream.write(text)

    def isatty(self) -> bool:
        return self.stream.isatty()

    def flush(self) -> None:
        self.stream.flush()


def _encodable(stream: TextIO) -> TextIO:
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        "✘→·–…".encode(encoding)
        return stream
    except (UnicodeEncodeError, LookupError):
        return _AsciiStream(stream, encoding if _known(encoding) else "ascii")  # type: ignore[return-value]


def _known(encoding: str) -> bool:
    import codecs

    try:
        codecs.lookup(encoding)
        return True
    except LookupError:
        return False


def _silence_stdout() -> None:
    """The reader of stdout is gone: what is still buffered must not fail again at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _open_cache(args: argparse.Namespace, create: bool = True) -> Cache | None:
    """Opened up front, so that a bad --cache-dir is one error line before any work; a bad
    default location is a warning and a cache that stays off."""
    from subcompat.cache import Cache, CacheError

    if getattr(args, "no_cache", False):
        return None
    cache: Cache = Cache(args.cache_dir)  # or a FleetCache above it: the same methods
    try:
        url = args.cache or _config_cache()
        if url:
            from subcompat.cache_pg import FleetCache, is_url

            if not is_url(url):
                raise UsageError(f"--cache {url!r}: expected a postgresql:// URL")
            cache = FleetCache(url, cache)  # type: ignore[assignment]  # duck-typed: Cache's methods
        cache.open(create=create)
    except CacheError as exc:
        raise UsageError(str(exc)) from None
    return cache


def _config_cache() -> str | None:
    from subcompat import config as config_mod

    try:
        return config_mod.load().cache
    except config_mod.ConfigError as exc:
        raise UsageError(str(exc)) from None


def _check(args: argparse.Namespace) -> int:
    """Runs in the project root, so imports, the cache's environment key and relative
    paths in reports are the same from any subdirectory. The current directory stays on
    the path after the root (modules beside you still import) unless ``--path`` is given."""

    start = os.getcwd()
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "SUBCOMPAT_CACHE_DIR")}
    try:
        return _check_from(args, Path(start))
    finally:
        os.chdir(start)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_from(args: argparse.Namespace, start: Path) -> int:
    from subcompat import config as config_mod

    _absolute_paths(args)
    if args.path is not None and not os.path.isdir(args.path):
        raise UsageError(f"--path {args.path}: not a directory")
    try:
        config = config_mod.load(Path(args.path) if args.path else None)
    except config_mod.ConfigError as exc:
        raise UsageError(str(exc)) from None
    root, why = config_mod.project_root(args.path, config)
    here = start.resolve()
    if args.path is None and root != here:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(here), *_pythonpath()])
        why += "; then the current directory"
    if root != here or args.path is not None:
        print(f"subcompat: importing from {root} ({why})", file=sys.stderr)
    os.chdir(root)
    return _check_in_root(args, config, root, start)


def _absolute_paths(args: argparse.Namespace) -> None:
    """Paths given relative to where the user stands, made absolute before moving to the
    project root; an interpreter named without a slash is still looked up on PATH."""
    for name in ("path", "cache_dir", "baseline"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    if args.python and os.sep in args.python:
        args.python = os.path.abspath(args.python)
    for i, target in enumerate(args.targets):
        file, function = _as_file(target)
        if file is not None:
            args.targets[i] = os.path.abspath(file) + (f":{function}" if function else "")
    if os.environ.get("SUBCOMPAT_CACHE_DIR"):
        os.environ["SUBCOMPAT_CACHE_DIR"] = os.path.abspath(os.environ["SUBCOMPAT_CACHE_DIR"])
    if os.environ.get("PYTHONPATH"):
        entries = os.environ["PYTHONPATH"].split(os.pathsep)
        os.environ["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) if p else p for p in entries)


def _targets(args: argparse.Namespace, config: Config, root: Path) -> list[str]:
    """Dotted names as given, files as their module names (their import directory put on
    PYTHONPATH when it is not the root), packages as all their modules."""
    from subcompat import config as config_mod

    named = []
    for target in args.targets or config.jobs:
        file, function = _as_file(target)
        if file is not None:
            named.append(_file_target(Path(file), root) + (f":{function}" if function else ""))
        else:
            named.append(target)
    for target in named:
        if not config_mod.is_target_name(target):
            raise UsageError(
                f"{target[:100]!r}{'...' if len(target) > 100 else ''} is not a module name "
                "(expected dotted.module, module:function, module:Class.method or a .py file, at most "
                f"{config_mod.MAX_TARGET_LEN} characters)"
            )
    # a package, named here or in the config, is all of its modules (found on disk, on this
    # interpreter's path: a named package is expanded only when probing this interpreter)
    if args.targets and args.python:
        return named
    return config_mod.expand_jobs(named, [str(root), *_pythonpath(), *sys.path[1:]])


def _as_file(target: str) -> tuple[str | None, str]:
    """``path/to/jobs.py`` or ``path/to/jobs.py:function`` as (file, function); (None, "")
    for a dotted name."""
    file, colon, function = target.rpartition(":")
    if not (colon and function.isidentifier()):
        file, function = target, ""
    return (file, function) if file.endswith(".py") or os.sep in file else (None, "")


def _pythonpath() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def _file_target(file: Path, root: Path) -> str:
    from subcompat import config as config_mod

    if not file.is_file():
        raise UsageError(f"{file}: no such file")
    if file.suffix != ".py":
        raise UsageError(f"{file}: not a Python source file (.py)")
    module, directory = config_mod.module_for_file(file)
    if directory != root and str(directory) not in _pythonpath():
        os.environ["PYTHONPATH"] = os.pathsep.join([str(directory), *_pythonpath()])
    print(f"subcompat: {file} is module {module} (imported from {directory})", file=sys.stderr)
    return module


def _check_in_root(args: argparse.Namespace, config: Config, root: Path, start: Path) -> int:
    from subcompat import config as config_mod
    from subcompat.check import check
    from subcompat.probe import ProbeError
    from subcompat.report import Report, write

    targets = _targets(args, config, root)
    if not targets:
        raise UsageError(
            "no targets: give dotted module names (e.g. myapp.jobs or myapp.jobs:send) "
            "or set jobs in [tool.subcompat] of pyproject.toml"
        )
    baseline = None
    if args.baseline:
        from subcompat import baseline as baseline_mod

        try:
            baseline = baseline_mod.load(args.baseline)
        except baseline_mod.BaselineError as exc:
            raise UsageError(str(exc)) from None
    from subcompat.route import Policy

    policy = Policy(fallback=args.fallback or config.fallback, degraded=args.degraded or config.degraded)
    cache = _open_cache(args)
    progress = _Progress.for_stream(sys.stderr, args.progress)
    from subcompat import _transport

    _transport.contain_strays()  # what escapes the probe's own containment ends with us
    try:
        report = check(
            targets,
            python=args.python,
            cache=cache,
            timeout=args.timeout or config.timeout,
            memory_mb=config.memory if args.memory is None else args.memory,
            jobs=args.jobs,
            policy=policy,
            runtime=args.runtime,
            progress=progress,
        )
    except ProbeError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None
    finally:
        _transport.sweep_strays()
        if progress is not None:
            progress.clear()
        if cache is not None:
            cache.close()
    verdicts = tuple(_explain_unimportable(v, root, start) for v in report.verdicts)
    if config.ignore or config.assume_incompatible:
        verdicts = tuple(config_mod.apply_overrides(verdicts, config))
        if args.python is None:
            for message in config_mod.inert_rules(verdicts, config, [str(root), *sys.path[1:]]):
                warnings.warn(message, stacklevel=1)
    report = Report(report.python, verdicts, report.policy, report.elapsed_s, report.probed)
    write(report, args.format, _encodable(sys.stdout), verbose=args.verbose)
    code = report.exit_code(strict=args.strict)
    if baseline is not None:
        comparison = baseline_mod.compare(report, baseline)
        for line in comparison.lines():
            print(f"subcompat: {line}", file=sys.stderr)
        if code != EXIT_USAGE:
            code = 1 if comparison.regressions else 0
    return code


def _explain_unimportable(v: Verdict, root: Path, start: Path) -> Verdict:
    """A target that is not on the import path is a setup problem, not 'a bug in the
    module': say where it was looked for and where it is."""
    from dataclasses import replace

    from subcompat import config as config_mod
    from subcompat.verdict import ERROR

    module = v.target.partition(":")[0]
    parts = module.split(".")
    prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    missing = next((p for p in prefixes if f"No module named '{p}'" in v.reason), None)
    if v.verdict != ERROR or missing is None:
        return v
    looked = ", ".join([str(root), *_pythonpath()]) + " and the interpreter's site-packages"
    found = config_mod.where_is(parts[0], root, [start] if start.resolve() != root else [])
    if found is not None:
        fix = f"it is in {found}: pass --path {found}, or install the project (pip install -e .)"
    elif missing != parts[0]:
        fix = f"{missing.rpartition('.')[0]} has no module {missing.rpartition('.')[2]!r}: check the name"
    else:
        fix = "check the name, run from its project, pass --path DIR, or install its distribution"
    reason = f"{module} is not importable (No module named {missing!r}); looked in {looked}; {fix}"
    return replace(v, reason=reason)


class _Progress:
    """``[done/total] probing NAME`` on one self-erasing stderr line; nothing unless a terminal
    (or ``--progress always``), so pipes and CI logs stay clean."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = False

    @classmethod
    def for_stream(cls, stream: TextIO, mode: str) -> _Progress | None:
        tty = hasattr(stream, "isatty") and stream.isatty()
        return cls(stream) if mode == "always" or (mode == "auto" and tty) else None

    def __call__(self, done: int, total: int, probing: str | None) -> None:
        text = f"[{done}/{total}]" + (f" probing {probing}" if probing else " done")
        self.stream.write(f"\r\x1b[K{text}")
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _matrix(args: argparse.Namespace) -> int:
    from subcompat.matrix import MatrixError, load_report, merge

    try:
        table = merge([load_report(path) for path in args.reports])
    except MatrixError as exc:
        raise UsageError(str(exc)) from None
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(table + "\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    else:
        _encodable(sys.stdout).write(table + "\n")
    return 0


def _cache(args: argparse.Namespace) -> int:
    if (args.file is not None) != (args.action == "import"):
        raise UsageError("cache import takes one FILE; the other actions take none")
    if args.action in ("export", "import"):
        return _transfer(args)
    cache = _open_cache(args, create=False)  # showing or clearing a cache never creates one
    assert cache is not None
    try:
        if args.action == "clear":
            removed = cache.clear()
            print(f"cleared {removed} entries from {cache.path}")
            return 0
        summary = cache.summary()
    finally:
        cache.close()
    if args.format == "json":
        print(json.dumps(summary, indent=2))
        return 0
    if not summary["usable"]:
        print(f"no cache at {summary['path']}")
        return 0
    print(f"{summary['path']} (schema {summary['schema']}, {summary['size_bytes']} bytes)")
    if "store" in summary:
        store = summary["store"]
        state = f"{store['jobs']} job verdict(s), {store['probes']} probe(s)"
        print(f"store {store['url']}: {state if store['usable'] else 'unreachable'}")
    print(f"{len(summary['jobs'])} job verdict(s)")
    for job in summary["jobs"]:
        print(f"  {job['verdict']:<12} {job['target']}  (Python {job['python']})")
    print(f"{len(summary['extensions'])} extension verdict(s)")
    for ext in summary["extensions"]:
        print(f"  {ext['verdict']:<12} {ext['module']}  {ext['file']}")
    return 0


def _transfer(args: argparse.Namespace) -> int:
    """export: the cache's job verdicts as JSON on stdout; import: FILE into the cache."""
    from subcompat import transfer

    rows: list[tuple[str, str, str, str, str]] = []
    skipped = 0
    if args.action == "import":
        try:
            rows, skipped = transfer.read(args.file)
        except transfer.TransferError as exc:
            raise UsageError(str(exc)) from None
    cache = _open_cache(args, create=args.action == "import")
    assert cache is not None
    try:
        if args.action == "export":
            print(json.dumps(transfer.export(cache.job_rows()), indent=1))
            return 0
        added = sum(1 for row in rows if cache.put_job_row(row))
    finally:
        cache.close()
    print(
        f"imported {added} verdict(s) into {cache.path}; {len(rows) - added} already there or not written"
        + (f"; {skipped} entr(ies) without keys and stamps skipped" if skipped else "")
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
