"""Command line: ``subcompat check``, ``subcompat cache show|clear``.

Exit codes: 0 every target compatible (or degraded, unless --strict); 1 a target is
incompatible, crashes or hangs in a sub-interpreter; 2 usage error, or a target that
is broken in a normal interpreter too (error verdict); 3 this Python has no isolated
sub-interpreters (unsupported). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections.abc import Sequence

from subcompat import __version__

EXIT_USAGE = 2
_TARGET = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*(:[A-Za-z_]\w*)?$")


class UsageError(Exception):
    """A one-line message for the user; exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="subcompat",
        description="May this job run in an isolated sub-interpreter?",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"subcompat {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    check = sub.add_parser("check", help="probe job modules in fresh sub-interpreters")
    check.add_argument("targets", nargs="*", metavar="TARGET", help="dotted module or module:function")
    check.add_argument("--format", choices=("text", "json"), default="text")
    check.add_argument("--python", metavar="PATH", help="interpreter or venv python to probe")
    check.add_argument(
        "--cache-dir", metavar="DIR", help="default: $SUBCOMPAT_CACHE_DIR or the user cache dir"
    )
    check.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    check.add_argument(
        "--timeout",
        type=_positive,
        default=30.0,
        metavar="S",
        help="seconds per candidate before it counts as a hang (default 30)",
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
        default="fallback",
        help="where degraded jobs should run (for the advice and route)",
    )
    check.add_argument("--fallback", choices=("process", "thread"), default="process")
    check.add_argument(
        "--runtime",
        choices=("none", "chancy"),
        default="none",
        help="subtract what this runtime loads in every sub-interpreter "
        "(chancy: its job wrapper imports chancy and psycopg)",
    )

    cache = sub.add_parser("cache", help="inspect or clear the verdict cache")
    cache.add_argument("action", choices=("show", "clear"))
    cache.add_argument("--cache-dir", metavar="DIR")
    cache.add_argument("--format", choices=("text", "json"), default="text")
    return parser


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


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
    try:
        args = build_parser().parse_args(argv)
        if args.command == "check":
            return _check(args)
        if args.command == "cache":
            return _cache(args)
        build_parser().print_help()
        return EXIT_USAGE
    except UsageError as exc:
        print(f"subcompat: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("subcompat: interrupted", file=sys.stderr)
        return 130


def _open_cache(args: argparse.Namespace):  # -> Cache | None
    from subcompat.cache import Cache

    if getattr(args, "no_cache", False):
        return None
    return Cache(args.cache_dir)


def _check(args: argparse.Namespace) -> int:
    from subcompat.check import check
    from subcompat.probe import ProbeError
    from subcompat.report import write
    from subcompat.route import Policy

    if not args.targets:
        raise UsageError("no targets: give dotted module names (e.g. myapp.jobs or myapp.jobs:send)")
    for target in args.targets:
        if not _TARGET.match(target):
            raise UsageError(f"{target!r} is not a module name (expected dotted.module or module:function)")
    cache = _open_cache(args)
    try:
        report = check(
            args.targets,
            python=args.python,
            cache=cache,
            timeout=args.timeout,
            jobs=args.jobs,
            policy=Policy(fallback=args.fallback, degraded=args.degraded),
            runtime=args.runtime,
        )
    except ProbeError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": ")) from None
    finally:
        if cache is not None:
            cache.close()
    write(report, args.format)
    return report.exit_code(strict=args.strict)


def _cache(args: argparse.Namespace) -> int:
    cache = _open_cache(args)
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
    print(f"{summary['path']} (schema {summary['schema']}, {summary['size_bytes']} bytes)")
    print(f"{len(summary['jobs'])} job verdict(s)")
    for job in summary["jobs"]:
        print(f"  {job['verdict']:<12} {job['target']}  (Python {job['python']})")
    print(f"{len(summary['extensions'])} extension verdict(s)")
    for ext in summary["extensions"]:
        print(f"  {ext['verdict']:<12} {ext['module']}  {ext['file']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
