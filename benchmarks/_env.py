"""The benchmark's throwaway environment: a venv with real C-extension packages.

Full runs build ``benchmarks/.work/venv`` once (pip, binary wheels only for the
extension packages) and reuse it while the requirement list is unchanged. Quick runs
build nothing: they probe the current interpreter and whatever it already has.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: distribution -> the import names the app uses from it (all ship C extensions,
#: except where noted). Small cp313 manylinux wheels, chosen to cover the init styles
#: subcompat tells apart: single-phase (ujson), multi-phase without a GIL slot
#: (Cython: msgpack, pyyaml's _yaml...), PyO3 (orjson, bcrypt), soft fallbacks.
EXTENSION_PACKAGES: dict[str, tuple[str, ...]] = {
    "msgpack": ("msgpack",),
    "orjson": ("orjson",),
    "ujson": ("ujson",),
    "pyyaml": ("yaml",),
    "markupsafe": ("markupsafe",),
    "regex": ("regex",),
    "simplejson": ("simplejson",),
    "xxhash": ("xxhash",),
    "mmh3": ("mmh3",),
    "zstandard": ("zstandard",),
    "lz4": ("lz4.frame",),
    "brotli": ("brotli",),
    "cbor2": ("cbor2",),
    "wrapt": ("wrapt",),
    "multidict": ("multidict",),
    "yarl": ("yarl",),
    "frozenlist": ("frozenlist",),
    "charset-normalizer": ("charset_normalizer",),
    "psutil": ("psutil",),
    "bcrypt": ("bcrypt",),
    "cffi": ("_cffi_backend",),
    "numpy": ("numpy",),
}
#: For items 3-5: the job runtime itself (chancy's executors, its PostgreSQL driver).
RUNTIME_PACKAGES = ("chancy>=0.26", "interpreters-pep-734>=0.4.1", "psycopg[binary]>=3.2", "attrs")


def work_dir() -> Path:
    return REPO / "benchmarks" / ".work"


def _requirements() -> list[str]:
    return sorted(EXTENSION_PACKAGES) + list(RUNTIME_PACKAGES)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def make_venv(venv: Path) -> Path:
    """A fresh venv without pip (Debian's CPython builds have no ensurepip, so
    ``-m venv`` with pip fails there); pip_install() fills it from this process's pip."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--clear", "--without-pip", str(venv)], check=True)
    return venv_python(venv)


def pip_install(py: Path, *args: str) -> None:
    """``pip install ARGS`` into the venv of ``py``, run by the runner's own pip."""
    cmd = [sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--disable-pip-version-check"]
    proc = subprocess.run([*cmd, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def ensure_venv(venv: Path, log=print) -> Path:
    """Create (or reuse) the benchmark venv; return its python."""
    reqs = _requirements()
    stamp = venv / ".bench-done"
    want = hashlib.sha256(("\n".join(reqs) + "\n" + sys.version).encode()).hexdigest()
    py = venv_python(venv)
    if stamp.exists() and stamp.read_text() == want and py.exists():
        return py
    log(f"building the benchmark venv {venv} ({len(EXTENSION_PACKAGES)} extension packages)...")
    make_venv(venv)

    def install(*args: str) -> None:
        pip_install(py, *args)

    # extension packages: wheels only, never a local build
    install("--only-binary", ":all:", *sorted(EXTENSION_PACKAGES))
    install(*RUNTIME_PACKAGES)
    install("packaging>=23", "platformdirs>=3")
    link_subcompat(venv)
    stamp.write_text(want)
    return py


def link_subcompat(venv: Path) -> None:
    """Make this checkout's subcompat importable in the venv with a plain path ``.pth``.

    Not ``pip install -e``: setuptools' editable finder is a ``.pth`` that *imports* a
    finder module (pathlib, re, enum...) at every interpreter start, and every isolated
    sub-interpreter runs ``site`` again: +20-27 ms per interpreter on this machine,
    paid by every probe trial and every naive check alike. A production venv has
    no such hook; a symlinked source dir on a path-only ``.pth`` costs nothing.
    """
    src = venv / "subcompat-src"
    src.mkdir(exist_ok=True)
    link = src / "subcompat"
    if not link.is_symlink():
        link.symlink_to(REPO / "subcompat", target_is_directory=True)
    site = subprocess.run(
        [str(venv_python(venv)), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "_subcompat_src.pth").write_text(str(src) + "\n")


def importable(python: str, names: list[str]) -> set[str]:
    """Which of ``names`` the interpreter ``python`` can find (without importing them)."""
    if os.path.abspath(python) == os.path.abspath(sys.executable):
        found = set()
        for n in names:
            try:
                if importlib.util.find_spec(n) is not None:
                    found.add(n)
            except (ImportError, ValueError):
                pass
        return found
    code = (
        "import importlib.util as u,sys\n"
        "for n in sys.argv[1:]:\n"
        "    try:\n"
        "        s=u.find_spec(n)\n"
        "    except Exception:\n"
        "        s=None\n"
        "    if s is not None: print(n)\n"
    )
    out = subprocess.run([python, "-c", code, *names], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def describe_machine(python: str) -> dict[str, str]:
    import platform

    ver = subprocess.run(
        [python, "-c", "import sys;print(sys.version.split()[0])"], capture_output=True, text=True
    ).stdout.strip()
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            kb = int(fh.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return {
        "cores": str(os.cpu_count()),
        "cpu": model or platform.processor() or "unknown",
        "memory": mem,
        "python": ver,
        "os": f"{platform.system()} {platform.release()}",
    }
