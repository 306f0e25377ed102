"""Reading a file someone else put there (a verdict file, an export, a report, the config,
a probe worker's breadcrumbs and output): only a regular file, never more than a bound,
and never blocking: it is opened non-blocking, without following a final symlink where
asked, and checked after opening, so a FIFO or ``/dev/zero`` swapped in for it cannot
hang or exhaust the reader. Stdlib only: the probe child loads it by file path."""

from __future__ import annotations

import os
import stat


class Refused(Exception):
    """The file is not one to read; the message says why."""


def file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file"


def read_regular(path: str, limit: int) -> tuple[bytes, int]:
    """The bytes and mtime (ns) of a regular file of at most ``limit`` bytes. ``OSError``
    when it cannot be opened, :class:`Refused` when it is not a file to read."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"not a regular file (a {file_kind(st.st_mode)})")
        if st.st_size > limit:
            raise Refused(f"{st.st_size} bytes, more than the {limit} allowed")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise Refused(f"grew past {limit} bytes while being read")
        return b"".join(chunks), st.st_mtime_ns
    finally:
        os.close(fd)


def read_tail(path: str, limit: int) -> bytes:
    """The last ``limit`` bytes of a regular file (a worker's output, its breadcrumbs),
    never following a symlink: job code may have replaced the file with anything."""
    flags = (
        os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    )
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"not a regular file (a {file_kind(st.st_mode)})")
        start = max(0, st.st_size - limit)
        chunks, total = [], 0
        while total < limit:
            chunk = os.pread(fd, min(1 << 20, limit - total), start + total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
