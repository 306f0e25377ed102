"""Which installed packages a main interpreter is asked about, and what it loads there.

A package may check for its accelerator first, or fall back wholesale, and so skip in a
sub-interpreter without a word an extension a main interpreter loads: the verdict then
names an accelerator the job never tried. Asking costs a main-interpreter import, so only
packages that keep extension files the sub-interpreter neither loaded nor tried are asked,
each once per run, of one standing *sampler* worker that imports installed packages only,
never job code.
"""

from __future__ import annotations

import os
import threading

from subcompat._transport import ChildGone
from subcompat.discover import ModuleInfo

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from subcompat._interpreter import Interpreter
    from subcompat._seen import Seen
    from subcompat._target import Host, Target
    from subcompat._transport import Worker


class Sampling:
    """The run's samples: installed packages' main-interpreter loads, and extension files
    in their directories, each looked up once."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._sampler: Worker | None = None  # imports installed packages in a main interpreter
        self._sampler_lock = threading.Lock()
        self._loads_memo: dict[str, list[ModuleInfo]] = {}
        self._dir_memo: dict[str, tuple[str, ...]] = {}

    def untried_packages(self, seen: Seen, interp: Interpreter) -> list[str]:
        """The installed packages the sub-interpreter imported (or tried to: one whose own
        import failed on an extension, which its importer swallowed) that keep extension
        files in their own directory it neither loaded nor tried: a main interpreter may load
        what the sub-interpreter skipped without a word (the package checked for one first,
        or fell back wholesale). Only these are worth asking a main interpreter about."""
        suffixes = tuple(interp.ext_suffixes)
        if not suffixes:
            return []
        return [
            package
            for package, directory in sorted(seen.packages_met().items())
            if any(f not in seen.sub_files for f in self._extension_files(directory, suffixes))
        ]

    def main_loads(self, run: Target, package: str) -> list[ModuleInfo]:
        """The extension modules importing ``package`` loads in a main interpreter, once
        per run: asked of the probe's standing sampler worker, whose main interpreter
        imports installed packages only, never job code. Empty if it could not tell."""
        with self._lock:
            known = self._loads_memo.get(package)
        if known is not None:
            return known
        with self._sampler_lock:
            if self._sampler is None or self._sampler.exit is not None or not self._sampler.zygote.alive:
                self._sampler = run.zygote.fork(self.host.memory_bytes)
            try:
                reply = run.request(self._sampler, "loads", run.deadline, package=package)
            except ChildGone:  # it killed or hung a main interpreter: no answer, asked once
                reply = {}
        found = [ModuleInfo.from_json(m) for m in reply.get("modules", ())]
        with self._lock:
            self._loads_memo[package] = found
        return found

    def _extension_files(self, directory: str, suffixes: tuple[str, ...]) -> tuple[str, ...]:
        """The extension files directly in ``directory`` (real paths), once per run."""
        with self._lock:
            found = self._dir_memo.get(directory)
        if found is None:
            try:
                names = os.listdir(directory)
            except OSError:
                names = []
            found = tuple(os.path.realpath(os.path.join(directory, n)) for n in names if n.endswith(suffixes))
            with self._lock:
                self._dir_memo[directory] = found
        return found
