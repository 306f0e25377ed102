"""The ELF section reader on real compiled extensions (tests/_cbuild.py)."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sysconfig

import pytest
from _req import require_or_skip

from subcompat import _elffile

pytestmark = pytest.mark.needs_subinterpreters  # the compiled fixtures need 3.13+ headers


def _extension(site):
    return site / ("sc_single" + sysconfig.get_config_var("EXT_SUFFIX"))


def test_sections_of_a_compiled_extension_match_readelf(fixture_site):
    require_or_skip(shutil.which("readelf"), "needs readelf (binutils) to compare with")
    path = _extension(fixture_site)
    with open(path, "rb") as fh:
        found = _elffile.sections(fh)
    assert found is not None
    listing = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True, check=True).stdout
    rows = re.findall(r"\]\s+(\S+)\s+(\w+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+([0-9a-f]+)", listing)
    want = {
        name: (kind == "NOBITS", int(off, 16), int(size, 16))
        for name, kind, off, size in rows
        if name != "NULL"  # section 0 has no name: readelf prints its type there
    }
    got = {s.name: (not s.on_disk, s.offset, s.size) for s in found if s.name}
    assert got == want
    assert ".dynstr" in got and ".bss" in got


def test_the_dynamic_string_section_holds_the_init_symbol(fixture_site):
    data = _extension(fixture_site).read_bytes()
    found = _elffile.sections(io.BytesIO(data))
    assert found is not None
    (dynstr,) = [s for s in found if s.name == ".dynstr"]
    assert b"PyInit_sc_single" in data[dynstr.offset : dynstr.offset + dynstr.size]


def test_not_elf_is_none_and_a_truncated_file_is_a_value_error(fixture_site):
    assert _elffile.sections(io.BytesIO(b"MZ" + b"\0" * 100)) is None
    assert _elffile.sections(io.BytesIO(b"\x7fELF")) is None
    head = _extension(fixture_site).read_bytes()[:64]  # header only: the table is cut off
    with pytest.raises(ValueError):
        _elffile.sections(io.BytesIO(head))
