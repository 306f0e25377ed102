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
import re
import sys
import warnings
from collections.abc import Sequence

from subcompat import __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EXIT_USAGE = 2
_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")


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
    check.add_argument("targets", nargs="*", metavar="TARGET", help="dotted module or module:function")
    check.add_argument("--format", choices=("text", "json", "markdown", "junit", "github"), default="text")
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
        "an import still running after two thirds of it counts as a hang",
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
    check.add_argument("--strict", action="store_true", help="exit 1 on degraded targets too")
    check.add_argument(
        "--degraded",
        choices=("fallback", "subinterpreter"),
        default=None,
        help="where degraded jobs should run (for the advice and route; default: config, else fallback)",
    )
    check.add_argument("--fallback", choices=("process", "thread"), default=None)
    check.add_argument(
        "--runtime",
        choices=("none", "chancy"),
        default="none",
        help="subtract what this runtime loads in every sub-interpreter "
        "(chancy: its job wrapper imports chancy and psycopg)",
    )

    cache = sub.add_parser("cache", formatter_class=_Formatter, help="inspect or clear the verdict cache")
    cache.add_argument("action", choices=("show", "clear", "export", "import"))
    cache.add_argument("file", nargs="?", metavar="FILE", help="import: a file written by export")
    cache.add_argument("--cache-dir", metavar="DIR")
    cache.add_argument("--cache", metavar="URL", help="a postgresql:// verdict store (default: the config's)")
    cache.add_argument("--format", choices=("text", "json"), default="text")

    matrix = sub.add_parser(
        "matrix",
        formatter_class=_Formatter,
        help="merge JSON reports from several Pythons into one markdown table",
    )
    matrix.add_argument("reports", nargs="+", metavar="REPORT.json")
    matrix.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    return parser


def _limit(text: str, parse: type, rule: str, unit: str) -> float:
    """``text`` as a number that the probe's own rule accepts (one rule for CLI and config)."""
    from subcompat import probe

    try:
        value = parse(text)
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


def _warn_one_line(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
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
        args = build_parser().parse_args(argv)
        if args.command == "check":
            return _check(args)
        if args.command == "cache":
            return _cache(args)
        if args.command == "matrix":
            return _matrix(args)
        build_parser().print_help()
        return EXIT_USAGE
    except UsageError as exc:
        print(f"subcompat: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("subcompat: interrupted", file=sys.stderr)
        return 130
    except _Terminated as exc:
        import signal

        print(f"subcompat: stopped by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum


def _open_cache(args: argparse.Namespace, create: bool = True):  # -> Cache | None
    """Opened up front, so that a bad --cache-dir is one error line before any work; a bad
    default location is a warning and a cache that stays off."""
    from subcompat.cache import Cache, CacheError

    if getattr(args, "no_cache", False):
        return None
    cache: Any = Cache(args.cache_dir)  # or a FleetCache above it: the same methods
    try:
        url = args.cache or _config_cache()
        if url:
            from subcompat.cache_pg import FleetCache, is_url

            if not is_url(url):
                raise UsageError(f"--cache {url!r}: expected a postgresql:// URL")
            cache = FleetCache(url, cache)
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
    from subcompat import config as config_mod
    from subcompat.check import check
    from subcompat.probe import ProbeError
    from subcompat.report import Report, write
    from subcompat.route import Policy

    try:
        config = config_mod.load()
    except config_mod.ConfigError as exc:
        raise UsageError(str(exc)) from None
    # a package, named here or in the config, is all of its modules (found on disk, on this
    # interpreter's path: a named package is expanded only when probing this interpreter)
    if args.targets and args.python:
        targets = list(args.targets)
    else:
        targets = config_mod.expand_jobs(args.targets or config.jobs)
    if not targets:
        raise UsageError(
            "no targets: give dotted module names (e.g. myapp.jobs or myapp.jobs:send) "
            "or set jobs in [tool.subcompat] of pyproject.toml"
        )
    for target in targets:
        if not _TARGET.match(target):
            raise UsageError(f"{target!r} is not a module name (expected dotted.module or module:function)")
    baseline = None
    if args.baseline:
        from subcompat import baseline as baseline_mod

        try:
            baseline = baseline_mod.load(args.baseline)
        except baseline_mod.BaselineError as exc:
            raise UsageError(str(exc)) from None
    policy = Policy(fallback=args.fallback or config.fallback, degraded=args.degraded or config.degraded)
    cache = _open_cache(args)
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
        )
    except ProbeError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None
    finally:
        if cache is not None:
            cache.close()
    if config.ignore or config.assume_incompatible:
        verdicts = tuple(config_mod.apply_overrides(report.verdicts, config))
        report = Report(report.python, verdicts, report.policy, report.elapsed_s, report.probed)
    write(report, args.format)
    code = report.exit_code(strict=args.strict)
    if baseline is not None:
        comparison = baseline_mod.compare(report, baseline)
        for line in comparison.lines():
            print(f"subcompat: {line}", file=sys.stderr)
        if code != EXIT_USAGE:
            code = 1 if comparison.regressions else 0
    return code


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
        print(table)
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
