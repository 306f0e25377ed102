"""Run-time learning shared by the executors: the sub-interpreter ImportError, wherever
an interpreter pool hides it.

A call can still fail in a sub-interpreter on an import the probe could not see (a name
built at run time). On 3.13 the ImportError arrives as itself or inside an
``ExecutionFailed``; on 3.14+ the pool re-creates it on this side as a plain ``Exception``
under a ``NotShareableError``. Executors look for the refusal line anywhere in the
cause/context chain, then record it (``check.record_runtime_failure``) and re-run the call
on their fallback. No executor's runtime is imported here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from subcompat.probe import SUBINTERP_MESSAGE

CHAIN_LIMIT = 64  # exceptions looked at in one cause/context chain


def _chain(exc: BaseException, limit: int = CHAIN_LIMIT) -> Iterator[BaseException]:
    """``exc``, its causes, contexts (suppressed ones too) and group members, each once,
    nearest first, at most ``limit``: cycle-safe and bounded."""
    seen: set[int] = set()
    todo: deque[BaseException | None] = deque([exc])
    while todo and len(seen) < limit:
        cur = todo.popleft()
        if cur is None or id(cur) in seen:
            continue
        seen.add(id(cur))
        yield cur
        todo.extend((cur.__cause__, cur.__context__))
        if isinstance(cur, BaseExceptionGroup):
            todo.extend(cur.exceptions)


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not break the completion path
        return ""


def subinterpreter_import_message(exc: BaseException) -> str | None:
    """The line carrying the sub-interpreter refusal, from anywhere in the chain: the
    ImportError itself (3.13), or re-created on this side of the interpreter boundary as
    an ``ExecutionFailed``, or the plain ``Exception`` under a ``NotShareableError`` (3.14+)."""
    for cur in _chain(exc):
        text = _text(cur)
        if SUBINTERP_MESSAGE in text:
            return next(line.strip() for line in text.splitlines() if SUBINTERP_MESSAGE in line)
    return None


def is_subinterpreter_import_error(exc: BaseException) -> bool:
    return subinterpreter_import_message(exc) is not None
