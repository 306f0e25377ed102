"""The probe child: a throwaway process of the *target* interpreter.

Started by ``probe.py`` as ``python -c BOOT this_file``; speaks JSON lines (one
request on stdin, one response on the original stdout; whatever imported code prints
goes to stderr). Each ``trial`` runs in a brand-new isolated sub-interpreter, so a
failed import is never retried where it already failed. If a trial kills or hangs
this process, the parent reads the breadcrumb file to name the extension.

Stdlib only: the target may be a venv where subcompat is not installed.
"""

import ast
import importlib.util
import json
import os
import select
import signal
import sys
import time

PROTOCOL = 1
HERE = os.path.dirname(os.path.abspath(__file__))


def _load_sibling(name):
    spec = importlib.util.spec_from_file_location("_subcompat_" + name, os.path.join(HERE, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses needs the module registered
    spec.loader.exec_module(module)
    return module


class Backend:
    """Creates, runs code in and destroys one interpreter per trial."""

    name = None
    unsupported = None

    def __init__(self):
        if sys.version_info < (3, 13):
            self.unsupported = (
                f"Python {sys.version_info[0]}.{sys.version_info[1]} has no isolated "
                "sub-interpreters with their own GIL: use Python 3.13 or newer"
            )
            return
        try:
            import _interpreters

            self._low = _interpreters
        except ImportError:
            self._low = None
        try:
            import concurrent.interpreters as high  # 3.14+

            self._high = high
            self.name = "concurrent.interpreters"
        except ImportError:
            self._high = None
            self.name = "_interpreters" if self._low else None
        if self.name is None:
            self.unsupported = "this interpreter was built without sub-interpreter support"

    def open(self, *, shared_gil=False):
        """A fresh interpreter; run steps in it with ``exec``, then ``close`` it."""
        if shared_gil or self._high is None:
            return _LowSession(self._low, shared_gil)
        return _HighSession(self._high)

    @property
    def can_classify(self):
        return self._low is not None and hasattr(self._low, "new_config")


class _LowSession:
    """3.13: the private ``_interpreters`` module (also 3.14, for a shared-GIL config)."""

    def __init__(self, low, shared_gil):
        self._low = low
        config = low.new_config("isolated")
        if shared_gil:
            config.gil = "shared"
        self._iid = low.create(config)

    def exec(self, code, source=None):
        """Run ``code`` (source, or a code object) in the interpreter's ``__main__``;
        the uncaught error text, or None."""
        failed = self._low.exec(self._iid, code)
        return None if failed is None else getattr(failed, "formatted", str(failed))

    def close(self):
        self._low.destroy(self._iid)


class _HighSession:
    """3.14+: ``concurrent.interpreters`` (PEP 734)."""

    def __init__(self, high):
        self._high = high
        self._interp = high.create()

    def exec(self, code, source=None):
        try:
            try:
                self._interp.exec(code)
            except TypeError:  # a code object where only source is accepted
                if source is None:
                    raise
                self._interp.exec(source)
            return None
        except self._high.ExecutionFailed as exc:
            return str(exc)

    def close(self):
        self._interp.close()


class _MainSession:
    """This process's main interpreter (is the module broken everywhere?)."""

    def __init__(self):
        self._namespace = {"__name__": "__subcompat_trial__"}

    def exec(self, code, source=None):
        if isinstance(code, str):
            code = compile(code, "<subcompat-trial>", "exec")
        exec(code, self._namespace)
        return None

    def close(self):
        self._namespace.clear()


def describe_interpreter(backend, sys_path):
    """What the parent keys its cache on; also called in-process by the parent."""
    impl = sys.implementation
    return {
        "python": "%d.%d.%d" % sys.version_info[:3],
        "implementation": impl.name,
        "cache_tag": impl.cache_tag,
        "abiflags": getattr(sys, "abiflags", ""),
        "build": sys.version,
        "executable": sys.executable,
        "backend": backend.name,
        "unsupported": backend.unsupported,
        "can_classify": bool(backend.unsupported is None and backend.can_classify),
        "can_fork": hasattr(os, "fork"),
        "sys_path": sys_path,
    }


class Child:
    def __init__(self):
        self.backend = Backend()
        self._dists = None
        self._dist_memo = {}
        self._scan_memo = {}
        self.sys_path = [os.getcwd() if p == "" else p for p in sys.path]
        self.counter = 0
        self._discover = self._locator = self._trial_source = None

    # Loaded on first use: a child that only forks main-interpreter imports never
    # needs the parser, and everything it imports is in every process it forks.
    @property
    def discover(self):
        if self._discover is None:
            self._discover = _load_sibling("discover")
        return self._discover

    @property
    def locator(self):
        if self._locator is None:
            self._locator = self.discover.Locator()
        return self._locator

    @property
    def trial_source(self):
        """(code, source) of _trial.py: compiled once per child, not once per trial (~3 ms)."""
        if self._trial_source is None:
            path = os.path.join(HERE, "_trial.py")
            with open(path, encoding="utf-8") as fh:
                source = fh.read()
            self._trial_source = (compile(source, path, "exec"), source)
        return self._trial_source

    # -- ops ---------------------------------------------------------------
    def op_hello(self, req):
        return describe_interpreter(self.backend, self.sys_path)

    def op_trial(self, req):
        if self.backend.unsupported:
            raise RuntimeError(self.backend.unsupported)
        return self._post(self._run(req, where="sub"))

    def op_main(self, req):
        """Import ``names`` in the main interpreter of a fresh process: broken everywhere?
        The process is forked from this one, which only ever forks (no trial, no metadata
        lookups: nothing in its ``sys.modules`` the job did not ask for), so it costs no
        interpreter start-up; a crash or hang there is reported, not shared. The runs come
        back raw: the parent has them described by a trial child (``op_describe``)."""
        names = req["names"]
        if not hasattr(os, "fork"):  # the parent started this process for this request alone
            return {"runs": list(self._main_imports(req)), "status": "ok"}
        stem = req["workdir"] + "/main-%d-%d" % (os.getpid(), self.counter)
        self.counter += 1
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the forked process reports through files
            code = 0
            try:
                for i, raw in enumerate(self._main_imports(req)):
                    with open(stem + "-%d.tmp" % i, "w", encoding="utf-8") as fh:
                        json.dump(raw, fh)
                    os.replace(stem + "-%d.tmp" % i, stem + "-%d.json" % i)
            except BaseException:
                code = 70
            finally:
                os._exit(code)
        status, sig, detail = self._wait(pid, float(req.get("timeout_s") or 30) * len(names))
        runs = []
        for i in range(len(names)):
            try:
                with open(stem + "-%d.json" % i, encoding="utf-8") as fh:
                    runs.append(json.load(fh))
                os.unlink(stem + "-%d.json" % i)
            except (OSError, ValueError):
                break
        return {"runs": runs, "status": status, "signal": sig, "detail": detail}

    def op_describe(self, req):
        return {"result": self._post(req["result"])}

    def _main_imports(self, req):
        """The job first (with its function), then each extra name, in one main interpreter."""
        for i, name in enumerate(req["names"]):
            yield self._run(dict(req, name=name, function=req.get("function") if i == 0 else None), "main")

    @staticmethod
    def _wait(pid, timeout):
        """Reap the forked import; ("ok"|"crash"|"timeout", signal, detail)."""
        deadline = time.monotonic() + timeout
        if hasattr(os, "pidfd_open"):
            fd = os.pidfd_open(pid)
            try:
                ready = select.select([fd], [], [], max(0.0, timeout))[0]
            finally:
                os.close(fd)
            done = os.waitpid(pid, 0 if ready else os.WNOHANG)
        else:  # no pidfd: poll
            done = os.waitpid(pid, os.WNOHANG)
            while done[0] == 0 and time.monotonic() < deadline:
                time.sleep(0.005)
                done = os.waitpid(pid, os.WNOHANG)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", None, "no answer within %gs" % timeout
        status = done[1]
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            return "crash", sig, "killed by signal %d (%s)" % (sig, signal.Signals(sig).name)
        code = os.WEXITSTATUS(status)
        return ("ok", None, "") if code == 0 else ("crash", None, "exited with %d" % code)

    def _run(self, req, where):
        self.counter += 1
        result_path = req["workdir"] + "/result-%d-%d.txt" % (os.getpid(), self.counter)
        params = {k: v for k, v in req.items() if k not in ("v", "id", "op", "workdir", "names", "timeout_s")}
        params.update(sys_path=req.get("sys_path") or self.sys_path, result=result_path)
        if where == "main":
            session = _MainSession()
        else:
            session = self.backend.open(shared_gil=bool(req.get("shared_gil")))
        try:
            uncaught = session.exec(*self.trial_source) or session.exec("_begin(%r)\n" % (params,))
            step = self._read(result_path)
            leftover = []
            if step is not None and step["scan"]:
                leftover = self._deferred(session, params, step, result_path)
            if step is not None:
                uncaught = session.exec("_finish(%r)\n" % (leftover,))
            result = self._read(result_path)
        finally:
            session.close()
            try:
                os.unlink(result_path)
            except OSError:
                pass
        if result is None:
            raise RuntimeError("trial left no result: %s" % (uncaught or "unknown failure"))
        return result

    def _post(self, result):
        result["modules"] = [self._describe(name, file, ext) for name, file, ext in result["modules"]]
        present = {m["name"] for m in result["modules"]}
        every_failure = result["failures"] + [f for lz in result["lazy"] for f in lz.get("failures", ())]
        for f in every_failure:  # failed loads never reach sys.modules; keep them in the tree
            if f["name"] not in present and f.get("file"):
                present.add(f["name"])
                result["modules"].append(self._describe(f["name"], f["file"], True))
        return result

    def _deferred(self, session, params, step, result_path):
        """Feed the interpreter the deferred imports of its first-party modules, batch by
        batch, until none is new; return what is left after a failure."""
        seen = set()
        scanned = set()
        queue = [list(x) for x in params.get("pending") or ()]
        queue += self._scan(params.get("sources") or (), scanned, seen)
        queue += self._scan(step["new"], scanned, seen)
        while queue:
            session.exec("_lazy_step(%r)\n" % (queue,))
            step = self._read(result_path)
            if step is None:
                return []
            more = self._scan(step["new"], scanned, seen)
            if step["failed"]:
                return step["leftover"] + more
            queue = more
        return []

    def _scan(self, sources, scanned, seen):
        out = []
        for entry in sources:
            mod_name, file, is_pkg = entry[0], entry[1], entry[2]
            all_imports = bool(entry[3]) if len(entry) > 3 else False
            if file in scanned or self.locator.origin(file) != "first_party":
                continue
            scanned.add(file)
            for lz in self._lazy_in(mod_name, file, is_pkg, all_imports):
                key = (lz[0], tuple(lz[1]))
                if key not in seen:
                    seen.add(key)
                    out.append(lz)
        return out

    def _lazy_in(self, mod_name, file, is_pkg, all_imports):
        """Deferred imports of one file, parsed once per content (stat) for this child."""
        try:
            st = os.stat(file)
        except OSError:
            return []
        key = (mod_name, file, is_pkg, all_imports, st.st_mtime_ns, st.st_size)
        found = self._scan_memo.get(key)
        if found is None:
            found = self._scan_memo[key] = [
                [lz.module, list(lz.fromlist), lz.edge.importer, lz.edge.file, lz.edge.line, lz.edge.how]
                for lz in self.discover.scan_lazy_imports(
                    mod_name, file, is_package=is_pkg, all_imports=all_imports
                )
            ]
        return found

    @staticmethod
    def _read(path):
        try:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
            os.unlink(path)
            return ast.literal_eval(text)
        except (OSError, ValueError, SyntaxError, MemoryError, RecursionError):
            return None

    # -- helpers -----------------------------------------------------------
    def _describe(self, name, file, is_ext):
        origin = self.locator.origin(file)
        info = {"name": name, "file": file, "origin": origin, "extension": bool(is_ext)}
        if origin not in ("stdlib", "builtin") or is_ext:
            info["distribution"], info["version"], info["dist_stamp"] = self._dist_of(name, origin)
        return info

    def _dist_of(self, name, origin):
        if origin == "stdlib" or origin == "builtin":
            return "stdlib", "%d.%d.%d" % sys.version_info[:3], None
        top = name.split(".")[0]
        if top in self._dist_memo:
            return self._dist_memo[top]
        self._dist_memo[top] = found = self._find_dist(top)
        return found

    def _find_dist(self, top):
        import importlib.metadata as md

        if self._dists is None:
            try:
                self._dists = md.packages_distributions()
            except Exception:
                self._dists = {}
        for dist_name in self._dists.get(top, []):
            try:
                dist = md.distribution(dist_name)
            except Exception:
                continue
            path = getattr(dist, "_path", None)
            stamp = None
            if path is not None:
                for candidate in ("RECORD", "METADATA"):
                    p = os.path.join(str(path), candidate)
                    if os.path.exists(p):
                        stamp = p
                        break
            return dist.metadata["Name"] or dist_name, dist.version, stamp
        return None, None, None


def main():
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # C-level writes from imported code must not corrupt the protocol
    sys.stdout = sys.stderr
    child = Child()
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            req = json.loads(line)
        except ValueError as exc:
            proto.write(json.dumps({"v": PROTOCOL, "ok": False, "error": "bad request: %s" % exc}) + "\n")
            continue
        reply = {"v": PROTOCOL, "id": req.get("id")}
        if req.get("v") != PROTOCOL:
            reply.update(
                ok=False, error="protocol %r not supported (child speaks %d)" % (req.get("v"), PROTOCOL)
            )
        else:
            handler = getattr(child, "op_" + str(req.get("op")), None)
            try:
                if handler is None:
                    raise ValueError("unknown op %r" % req.get("op"))
                reply.update(handler(req))
                reply["ok"] = True
            except Exception as exc:
                reply.update(ok=False, error="%s: %s" % (type(exc).__name__, exc))
        proto.write(json.dumps(reply) + "\n")
        proto.flush()


if __name__ == "__subcompat_child__":
    main()
