"""Compile the test suite's C-extension fixtures into an importable site directory.

gcc directly (no setuptools: it may be absent), with the include dir and EXT_SUFFIX of
the interpreter that will load them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

CEXT = Path(__file__).with_name("cext")

# module name -> (source, extra -D defines)
EXTENSIONS: dict[str, tuple[str, dict[str, str]]] = {
    "sc_single": ("sc_single.c", {}),
    "sc_multi_nogil": ("sc_multi.c", {"GIL_SLOT": "0", "BEHAVIOUR": "0"}),
    "sc_multi_ok": ("sc_multi.c", {"GIL_SLOT": "1", "BEHAVIOUR": "0"}),
    "sc_segv": ("sc_multi.c", {"GIL_SLOT": "1", "BEHAVIOUR": "1"}),
    "sc_hang": ("sc_multi.c", {"GIL_SLOT": "1", "BEHAVIOUR": "2"}),
    "sc_shared": ("sc_shared.c", {"SECOND_LOAD": "0"}),
    "sc_second_crash": ("sc_shared.c", {"SECOND_LOAD": "1"}),
    "sc_softpkg._speedups": ("sc_single.c", {}),
    "sc_wrapped._core": ("sc_single.c", {}),
    "sc_careful._speedups": ("sc_single.c", {}),
    "sc_wholesale._first": ("sc_single.c", {}),
    "sc_wholesale._second": ("sc_multi.c", {"GIL_SLOT": "1", "BEHAVIOUR": "0"}),
    "sc_optional.extra._ext": ("sc_multi.c", {"GIL_SLOT": "1", "BEHAVIOUR": "0"}),
    "sc_mainhang._speedups": ("sc_single.c", {}),
    "sc_brittle._first": ("sc_single.c", {}),
    "sc_brittle._second": ("sc_multi.c", {"GIL_SLOT": "1", "BEHAVIOUR": "0"}),
    "sc_strict._first": ("sc_single.c", {}),
    "sc_strict._second": ("sc_single.c", {}),
}

PACKAGES: dict[str, tuple[str | None, str]] = {
    "sc_softpkg": (
        "sc-softpkg",
        '''"""Pure Python with an optional accelerator it silently skips (like PyYAML)."""
try:
    from sc_softpkg import _speedups
except ImportError:
    _speedups = None

HAS_SPEEDUPS = _speedups is not None

if HAS_SPEEDUPS:
    class CFast:
        answer = staticmethod(_speedups.answer)


def dumps(x):
    return repr(x) if _speedups is None else repr(x) + "!"
''',
    ),
    "sc_wrapped": (
        "sc-wrapped",
        '''"""Re-raises its accelerator's ImportError with its own message (like numpy)."""
try:
    from . import _core
except ImportError as exc:
    raise ImportError("sc_wrapped: the C core failed to load; try reinstalling") from exc
''',
    ),
    "sc_careful": (
        "sc-careful",
        '''"""Never tries its accelerator in a sub-interpreter: it checks for one first."""
import _interpreters

if _interpreters.get_current() != _interpreters.get_main():
    _speedups = None
else:
    from sc_careful import _speedups


def dumps(x):
    return repr(x)
''',
    ),
    "sc_wholesale": (
        "sc-wholesale",
        '''"""Falls back wholesale after its first accelerator fails: the second is never tried."""
try:
    from . import _first, _second
except ImportError:
    _first = _second = None
''',
    ),
    "sc_optional": (
        "sc-optional",
        '''"""Pure Python; an optional extension sits in a subpackage it does not import."""\n''',
    ),
    "sc_optional.extra": (None, ""),
    "sc_brittle": (
        "sc-brittle",
        '''"""Imports its accelerators unguarded: its importer falls back when the whole package
fails (like requests with charset_normalizer), so _second is never tried."""
from . import _first, _second
''',
    ),
    "sc_strict": (
        "sc-strict",
        '''"""Imports two accelerators unguarded (like h5py): its import dies at the first, and
the second, which a main interpreter loads with it, would fail too."""
from . import _first, _second
''',
    ),
    "sc_mainhang": (
        "sc-mainhang",
        '''"""Hangs when imported in a main interpreter; a sub-interpreter never tries its accelerator."""
import _interpreters

if _interpreters.get_current() == _interpreters.get_main():
    while True:
        pass
''',
    ),
}


def has_compiler() -> bool:
    return shutil.which("gcc") is not None


def _config(python: str) -> dict[str, str]:
    if python == sys.executable:
        return {"include": sysconfig.get_paths()["include"], "suffix": sysconfig.get_config_var("EXT_SUFFIX")}
    code = (
        "import json,sysconfig;print(json.dumps({'include': sysconfig.get_paths()['include'],"
        "'suffix': sysconfig.get_config_var('EXT_SUFFIX')}))"
    )
    return json.loads(subprocess.check_output([python, "-c", code], text=True))


def build_fixture_site(
    dest: Path, python: str = sys.executable, versions: dict[str, str] | None = None
) -> Path:
    """Build every fixture into ``dest``; ``versions`` sets a distribution's version
    (rewriting its dist-info, as an upgrade would)."""
    versions = versions or {}
    dest.mkdir(parents=True, exist_ok=True)
    cfg = _config(python)
    for name, (source, defines) in EXTENSIONS.items():
        *pkg, leaf = name.split(".")
        out = dest.joinpath(*pkg, leaf + cfg["suffix"])
        out.parent.mkdir(parents=True, exist_ok=True)
        flags = [f'-DMODNAME="{name}"', f"-DINITFUNC=PyInit_{leaf}"] + [
            f"-D{k}={v}" for k, v in defines.items()
        ]
        key = hashlib.sha256((CEXT / source).read_bytes() + repr((flags, cfg)).encode()).hexdigest()
        stamp = out.with_name(out.name + ".key")
        if out.exists() and stamp.exists() and stamp.read_text() == key:
            continue
        subprocess.run(
            [
                "gcc",
                "-shared",
                "-fPIC",
                "-O1",
                "-Wall",
                "-Werror",
                f"-I{cfg['include']}",
                *flags,
                str(CEXT / source),
                "-o",
                str(out),
            ],
            check=True,
        )
        stamp.write_text(key)
    for package, (_dist, init) in PACKAGES.items():  # a subpackage has no distribution of its own
        pkg_dir = dest.joinpath(*package.split("."))
        pkg_dir.mkdir(parents=True, exist_ok=True)
        init_file = pkg_dir / "__init__.py"
        if not init_file.exists() or init_file.read_text() != init:
            init_file.write_text(init)
    for package, (dist, _init) in PACKAGES.items():
        if dist is not None:
            _write_dist_info(dest, package, dist, versions.get(dist, "1.0"))
    return dest


def _write_dist_info(dest: Path, package: str, dist: str, version: str) -> None:
    norm = dist.replace("-", "_")
    for old in dest.glob(f"{norm}-*.dist-info"):
        if old.name != f"{norm}-{version}.dist-info":
            shutil.rmtree(old)
    info = dest / f"{norm}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "top_level.txt").write_text(package + "\n")
    files = sorted(
        p.relative_to(dest).as_posix()
        for p in (dest / package).rglob("*")
        if p.is_file() and not p.name.endswith(".key")
    )
    record = [f"{f},," for f in files] + [
        f"{info.name}/{n},," for n in ("METADATA", "top_level.txt", "RECORD")
    ]
    (info / "RECORD").write_text("\n".join(record) + "\n")
