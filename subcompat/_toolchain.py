"""Which toolchain built an extension binary, from the markers it compiles in."""

from __future__ import annotations

import functools
import os

from subcompat import _elffile

# Markers compiled into extension binaries by the usual toolchains, in priority order:
# PyO3 binaries may contain "pybind11" strings, not vice versa.
MARKERS = (
    (b"pyo3", "PyO3"),
    (b"__pyx_", "Cython"),
    (b"CPyStatics", "mypyc"),
    (b"pybind11", "pybind11"),
    (b"nanobind", "nanobind"),
)
_STRING_SECTIONS = (".rodata", ".dynstr", ".strtab", ".comment", ".data")  # .data.rel.ro too


def toolchain_of(file: str | None, limit: int = 64 << 20) -> str | None:
    """Which toolchain built an extension binary, from the markers it leaves."""
    if not file:
        return None
    try:
        st = os.stat(file)
    except OSError:
        return None
    return _toolchain_of(file, st.st_size, st.st_mtime_ns, limit)


@functools.lru_cache(maxsize=256)
def _toolchain_of(file: str, size: int, mtime_ns: int, limit: int) -> str | None:
    """Once per file version and run. In an ELF binary only the sections that hold strings
    and symbol names are read (a tenth of the bytes; same answer on the 514 extension
    binaries of this machine); anything else is read whole, up to ``limit``."""
    found: set[bytes] = set()
    try:
        with open(file, "rb") as fh:
            spans = _string_spans(_elffile.sections(fh))
            if spans is None:
                fh.seek(0)
                spans = [(0, min(size, limit))]
            for offset, length in spans:
                fh.seek(offset)
                data = fh.read(min(length, limit))
                found.update(marker for marker, _ in MARKERS if marker in data)
    except (OSError, ValueError):  # _elffile.ELFInvalid is a ValueError
        return None
    return next((name for marker, name in MARKERS if marker in found), None)


def _string_spans(sections: list[_elffile.Section] | None) -> list[tuple[int, int]] | None:
    """(offset, size) of the sections where toolchain names end up, or None (read it all)."""
    if sections is None:
        return None
    spans = [(s.offset, s.size) for s in sections if s.on_disk and s.name.startswith(_STRING_SECTIONS)]
    return spans or None
