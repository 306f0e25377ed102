"""The section table of an ELF file, read from a binary stream, and nothing else.

Only what the toolchain check needs: each section's name, type, file offset and size.
Anything that is not ELF is ``None``; a truncated or inconsistent file raises
``ELFInvalid``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from typing import BinaryIO

SHT_NOBITS = 8  # .bss: occupies no bytes in the file


class ELFInvalid(ValueError):
    """An ELF header whose section table is not where it says."""


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    offset: int
    size: int

    @property
    def on_disk(self) -> bool:
        return self.type != SHT_NOBITS


def sections(fh: BinaryIO) -> list[Section] | None:
    """The sections of the ELF file ``fh`` is positioned at the start of, or None."""
    try:
        return _sections(fh)
    except struct.error as exc:
        raise ELFInvalid(f"truncated ELF section table: {exc}") from exc


def _sections(fh: BinaryIO) -> list[Section] | None:
    head = fh.read(64)
    if len(head) < 52 or head[:4] != b"\x7fELF" or head[4] not in (1, 2):
        return None
    end = "<" if head[5] == 1 else ">"
    if head[4] == 2:  # 64-bit
        (shoff,) = struct.unpack_from(end + "Q", head, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 0x3A)
        fmt = end + "IIQQQQ"
    else:
        (shoff,) = struct.unpack_from(end + "I", head, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", head, 0x2E)
        fmt = end + "IIIIII"
    if not shnum or shstrndx >= shnum:
        return None
    fh.seek(shoff)
    table = fh.read(shentsize * shnum)
    # name offset, type, flags, address, file offset, size
    headers = [struct.unpack_from(fmt, table, i * shentsize) for i in range(shnum)]
    fh.seek(headers[shstrndx][4])
    names = fh.read(headers[shstrndx][5])
    return [
        Section(_name(names, name_at), kind, offset, size) for name_at, kind, _, _, offset, size in headers
    ]


def _name(names: bytes, at: int) -> str:
    return names[at : names.find(b"\0", at)].decode("ascii", "replace")
