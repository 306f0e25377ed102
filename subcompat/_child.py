"""The probe child: a throwaway process of the *target* interpreter.

Started by ``probe.py`` as ``python -c BOOT this_file``; speaks JSON lines (one
request on stdin, one response on the original stdout; whatever imported code prints
goes to stderr). Each ``trial`` runs in a brand-new isolated sub-interpreter, so a
failed import is never retried where it already failed. If a trial kills or hangs
this process, the parent reads the breadcrumb file to name the extension.

Stdlib only: the target may be a venv where subcompat is not installed.
"""

import importlib.util
import json
import os
import sys

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

    def run(self, code, *, shared_gil=False):
        """Run ``code`` in a fresh interpreter; return the uncaught error text or None."""
        if shared_gil or self._high is None:
            low = self._low
            config = low.new_config("isolated")
            if shared_gil:
                config.gil = "shared"
            iid = low.create(config)
            try:
                failed = low.exec(iid, code)
                return None if failed is None else getattr(failed, "formatted", str(failed))
            finally:
                low.destroy(iid)
        interp = self._high.create()
        try:
            interp.exec(code)
            return None
        except self._high.ExecutionFailed as exc:
            return str(exc)
        finally:
            interp.close()

    @property
    def can_classify(self):
        return self._low is not None and hasattr(self._low, "new_config")


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
        "sys_path": sys_path,
    }


class Child:
    def __init__(self):
        self.backend = Backend()
        self.discover = _load_sibling("discover")
        self.locator = self.discover.Locator()
        with open(os.path.join(HERE, "_trial.py"), encoding="utf-8") as fh:
            self.trial_source = fh.read()
        self._dists = None
        self._dist_memo = {}
        self.sys_path = [os.getcwd() if p == "" else p for p in sys.path]
        self.counter = 0

    # -- ops ---------------------------------------------------------------
    def op_hello(self, req):
        return describe_interpreter(self.backend, self.sys_path)

    def op_trial(self, req):
        if self.backend.unsupported and req.get("where") != "main":
            raise RuntimeError(self.backend.unsupported)
        self.counter += 1
        result_path = req["workdir"] + "/result-%d-%d.json" % (os.getpid(), self.counter)
        params = {k: v for k, v in req.items() if k not in ("v", "id", "op", "workdir")}
        params.update(sys_path=req.get("sys_path") or self.sys_path, result=result_path)
        code = "PARAMS = " + repr(params) + "\n" + self.trial_source
        if req.get("where") == "main":  # this process's main interpreter: broken everywhere?
            exec(compile(code, "<subcompat-trial>", "exec"), {"__name__": "__subcompat_trial__"})
            uncaught = None
        else:
            uncaught = self.backend.run(code, shared_gil=bool(req.get("shared_gil")))
        try:
            with open(result_path, encoding="utf-8") as fh:
                result = json.load(fh)
            os.unlink(result_path)
        except (OSError, ValueError):
            raise RuntimeError("trial left no result: %s" % (uncaught or "unknown failure"))
        result["modules"] = [self._describe(name, file, ext) for name, file, ext in result["modules"]]
        present = {m["name"] for m in result["modules"]}
        every_failure = result["failures"] + [f for lz in result["lazy"] for f in lz.get("failures", ())]
        for f in every_failure:  # failed loads never reach sys.modules; keep them in the tree
            if f["name"] not in present and f.get("file"):
                present.add(f["name"])
                result["modules"].append(self._describe(f["name"], f["file"], True))
        return result

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
