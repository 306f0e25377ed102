"""What one trial proves about an extension file is proven once, for the whole run.

Whether a file loads on its own in a fresh sub-interpreter (and, refused there, with a
shared GIL) is a fact about the file, not about the target that met it: one thread
trials it while the others wait for its answer, the answer is remembered for the run
and recalled from the cache across runs, and a hang or a crash is never taken for one
(it may be the machine's, not the file's).
"""

from __future__ import annotations

import dataclasses
import threading

from subcompat._records import Trial
from subcompat.discover import ModuleInfo

TYPE_CHECKING = False  # typing costs ~3 ms at start-up; annotations are strings here
if TYPE_CHECKING:
    from subcompat._interpreter import Interpreter
    from subcompat._records import ExtensionFailure
    from subcompat._target import Host, Target

SUBINTERP_MESSAGE = "does not support loading in subinterpreters"


class FileFacts:
    """The run's extension-file trials: memoised by file, one thread trialing a file at once."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._ext_memo: dict[str, Trial] = {}
        self._ext_busy: dict[str, threading.Event] = {}  # files a thread is trialing now

    def extension_trials(
        self,
        run: Target,
        modules: dict[str, ModuleInfo],
        loaded: set[str],
        trials: list[Trial],
        interp: Interpreter,
        skipped: frozenset[str] = frozenset(),
    ) -> list[Trial]:
        """One record per extension that failed or that no sub-interpreter reached (or
        tried: ``skipped``).

        Unreached ones are loaded on their own in a fresh interpreter; failed ones
        are classified (does it load with a shared GIL?). Results are memoised per
        file for this run and recalled from the cache across runs.
        """
        failed: dict[str, ExtensionFailure] = {}
        for t in trials:
            for f in t.failures:
                failed.setdefault(f.name, f)
        settled = {t.culprit.name for t in trials if t.culprit and t.culprit.name}
        quiet = all(t.status in ("ok", "missing") for t in trials)
        if not failed and not settled and not skipped and quiet:
            return []
        todo: dict[str, ModuleInfo] = {
            m.name: m for m in modules.values() if m.extension and m.file and m.name not in loaded
        }
        for name, f in failed.items():
            if name not in todo and f.file:
                todo[name] = modules.get(name) or ModuleInfo(name, f.file, "unknown", True)
        out: list[Trial] = []
        later: list[tuple[str, ModuleInfo]] = []  # files another thread is trialing now
        for name, info in sorted(todo.items()):
            if name in settled:
                continue
            state = self._known_or_claimed(name, info, out)
            if state == "claimed":
                out.append(self._extension_trial(run, name, info, failed.get(name), interp))
            elif state == "busy":
                later.append((name, info))
        for name, info in later:  # the other thread's trials: wait for them, then read them
            self._wait_file(str(info.file))
            if self._known_or_claimed(name, info, out) == "claimed":  # it gave up (crash, hang)
                out.append(self._extension_trial(run, name, info, failed.get(name), interp))
        return out

    def _known_or_claimed(self, name: str, info: ModuleInfo, out: list[Trial]) -> str:
        """``known``: what is known of ``info``'s file (this run, the cache) is appended to
        ``out``; ``claimed``: this thread trials it now (``_extension_trial`` releases it);
        ``busy``: another thread is trialing it."""
        memo = self._remember(info)
        if memo is not None:
            out.append(dataclasses.replace(memo, candidate=name, cached=True))
            return "known"
        with self._lock:
            if str(info.file) in self._ext_busy:
                return "busy"
            self._ext_busy[str(info.file)] = threading.Event()
        return "claimed"

    def _wait_file(self, file: str) -> None:
        with self._lock:
            busy = self._ext_busy.get(file)
        if busy is not None:
            busy.wait(self.host.timeout)

    def _release_file(self, file: str) -> None:
        with self._lock:
            busy = self._ext_busy.pop(file, None)
        if busy is not None:
            busy.set()

    def _extension_trial(
        self, run: Target, name: str, info: ModuleInfo, failure: ExtensionFailure | None, interp: Interpreter
    ) -> Trial:
        """What ``info``'s file does on its own in a fresh interpreter (and, refused there,
        with a shared GIL): a fact for the whole run, memoised by file (the claim on it
        released after, whatever happens)."""
        try:
            return self._extension_fact(run, name, info, failure, interp)
        finally:
            self._release_file(str(info.file))

    def _extension_fact(
        self, run: Target, name: str, info: ModuleInfo, failure: ExtensionFailure | None, interp: Interpreter
    ) -> Trial:
        if failure is not None:  # the hook saw it fail; only the classification is missing
            trial = Trial("extension", name, "failed", failure.error, failures=(failure,))
        else:
            trial = run.trial("extension", name, mode="load", name=name, file=info.file).trial
        if (
            trial.status == "failed"
            and interp.can_classify
            and trial.error is not None
            and SUBINTERP_MESSAGE in trial.error.msg
        ):
            shared = run.trial(
                "classify", name, mode="load", name=name, file=info.file, shared_gil=True
            ).trial
            trial = dataclasses.replace(trial, shared_gil=shared.status == "ok")
        trial = dataclasses.replace(trial, file=info.file)
        if trial.status in ("ok", "failed"):  # a hang or a crash is not a fact about the file
            with self._lock:
                self._ext_memo[info.file or name] = trial
        return trial

    def _remember(self, info: ModuleInfo) -> Trial | None:
        assert info.file
        with self._lock:
            memo = self._ext_memo.get(info.file)
        if memo is None and self.host.recall is not None:
            memo = self.host.recall(info)
        return memo
