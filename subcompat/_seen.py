"""What one target's trials saw, merged into one tree; and the name checks that compare
what a sub-interpreter lacked with what a main interpreter has.

Part of the probe stage (``probe.py`` orchestrates, this module only merges): the raw
replies of the child enter here, and leave as ``ModuleInfo``, ``Edge`` and ``Trial``.
"""

from __future__ import annotations

import os

from subcompat._records import Trial, TrialError, parse_failures
from subcompat.discover import Edge, ModuleInfo

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from subcompat._records import RawRef, RawTrial

#: The probe's own code runs as these modules in a trial's interpreter (``__main__`` of a
#: sub-interpreter, the namespace of a main-interpreter pass): an import they make is the
#: probe's, never an edge of the user's tree.
PROBE_IMPORTERS = frozenset({"__main__", "__subcompat_trial__"})


class Seen:
    """What one target's trials saw, merged: the tree (sub-interpreters first, then a main
    interpreter), and apart from it what the sub-interpreters alone loaded or tried."""

    def __init__(self) -> None:
        self.modules: dict[str, ModuleInfo] = {}
        self.edges: dict[str, Edge] = {}
        self.loaded: set[str] = set()  # extensions a sub-interpreter loaded
        self.failed: set[str] = set()  # extensions a sub-interpreter tried and could not load
        self.sub_files: set[str] = set()  # their files (real paths)
        self.in_sub: set[str] = set()  # every module a sub-interpreter ended with
        self.sampled: dict[str, ModuleInfo] = {}  # extensions packages load in a main interpreter
        self.missing: dict[tuple[str, str], RawRef] = {}  # names a sub-interpreter lacked
        self.depends_on: set[str] = set()  # failed modules' files, where missing ones were looked for

    def absorb(self, raw: RawTrial, in_sub: bool = True) -> None:
        for path in (*raw.get("unloaded", ()), *raw.get("looked_in", ())):
            if isinstance(path, str) and os.path.isabs(path) and os.path.exists(path):
                self.depends_on.add(path)
        failures = parse_failures(
            [*raw.get("failures", ()), *(f for lz in raw.get("lazy", ()) for f in lz.get("failures", ()))]
        )
        failed = {f.name for f in failures}
        if in_sub:
            for ref in raw.get("refs", ()):
                self.missing.setdefault((ref["module"], ref["attr"]), ref)
            self.failed |= failed
            self.sub_files.update(os.path.realpath(f.file) for f in failures if f.file)
        for m in raw.get("modules", ()):
            info = ModuleInfo.from_json(m)
            self.modules.setdefault(info.name, info)
            if in_sub:
                self.in_sub.add(info.name)
            if in_sub and info.extension and info.name not in failed:
                self.loaded.add(info.name)
                if info.file:
                    self.sub_files.add(os.path.realpath(info.file))
        for name, (importer, file, line, how) in raw.get("edges", {}).items():
            if importer not in PROBE_IMPORTERS:  # the probe's own import: no edge of the tree
                self.edges.setdefault(name, Edge(importer, file, line, how))

    def sample(self, package: str, loads: list[ModuleInfo]) -> None:
        """What importing ``package`` loads in a main interpreter; its extensions join the
        tree (imported by the package) where the sub-interpreter did not have them."""
        for info in loads:
            if info.name.startswith(package + "."):
                self.sampled[info.name] = info
                self.modules.setdefault(info.name, info)
                self.edges.setdefault(info.name, Edge(package))

    def packages_met(self) -> dict[str, str]:
        """Installed packages (name: directory) a sub-interpreter imported, or whose import it
        began and lost on one of the package's own extensions."""
        out: dict[str, str] = {}
        for name in self.in_sub:
            info = self.modules.get(name)
            if info is not None and info.file and info.file.endswith("__init__.py") and foreign(info):
                out[name] = os.path.dirname(info.file)
        for name in self.failed:
            info = self.modules.get(name)
            package = name.rpartition(".")[0]
            if not package or package in out or info is None or not info.file or not foreign(info):
                continue
            directory = os.path.dirname(info.file)
            if os.path.isfile(os.path.join(directory, "__init__.py")):
                out[package] = directory
        return out

    def skipped(self) -> frozenset[str]:
        """Extensions a main interpreter loads with a package the sub-interpreter imported
        without loading or trying them: accelerators skipped without a word."""
        return frozenset(
            name
            for name, info in self.sampled.items()
            if info.extension and name not in self.loaded and name not in self.failed and foreign(info)
        )


def foreign(info: ModuleInfo) -> bool:
    """Someone else's package: installed, not the user's code and not the stdlib."""
    return info.origin not in ("stdlib", "builtin") and not _own(info)


def name_trials(
    missing: dict[tuple[str, str], RawRef],
    main_raw: RawTrial,
    job: Trial,
    main_job: Trial,
    modules: dict[str, ModuleInfo],
) -> list[Trial]:
    """One ``name`` trial per name first-party code takes from another module that a
    sub-interpreter lacked: ``failed`` when a main interpreter has it (a C-only name whose
    accelerator was skipped), ``missing`` when it has not either (nothing to do with
    sub-interpreters). A job that failed at import on such a name counts too, when the
    line is first-party and the main interpreter got through it."""
    in_main = {(r["module"], r["attr"]): r["state"] for r in main_raw.get("refs", ())}
    out = []
    for (module, attr), ref in missing.items():
        state = in_main.get((module, attr))
        if state is None or state == "unloaded":
            continue  # not asked, or the module did not load there: nothing to compare
        importer, file, line, how = ref["edge"]
        out.append(
            Trial(
                "name",
                f"{module}.{attr}",
                "failed" if state == "present" else "missing",
                TrialError("ImportError" if how == "from" else "AttributeError", _lacks(ref["state"])),
                edge=Edge(importer, file, line, how),
            )
        )
    at_import = _failed_on_a_name(job, main_job, modules)
    if at_import is not None and all(t.candidate != at_import.candidate for t in out):
        out.append(at_import)
    return out


def _own(info: ModuleInfo) -> bool:
    """The user's code: first-party source no installed distribution owns."""
    return info.origin == "first_party" and info.distribution is None


def _lacks(state: str) -> str:
    if state == "missing":
        return "no such attribute in a sub-interpreter"
    return f"looking it up in a sub-interpreter raised {state}"


def _failed_on_a_name(job: Trial, main_job: Trial, modules: dict[str, ModuleInfo]) -> Trial | None:
    """The job's own import stopped on ``mod.Name`` / ``from mod import Name`` at a
    first-party line, for a module that is not first-party, and a main interpreter
    got through the same import: a C-only name."""
    error = job.error
    if job.status != "failed" or main_job.status != "ok" or error is None or error.attr is None:
        return None
    module, attr = error.attr.module, error.attr.name
    owner = modules.get(module)
    where_file, _, where_line = (error.where or "").rpartition(":")
    here = next((m for m in modules.values() if m.file == where_file and _own(m)), None)
    if here is None or (owner is not None and _own(owner)) or not where_line.isdigit():
        return None
    how = "from" if error.type == "ImportError" else "attribute"
    failure = TrialError(error.type, error.msg, at_import=True)
    return Trial(
        "name", f"{module}.{attr}", "failed", failure, edge=Edge(here.name, where_file, int(where_line), how)
    )
