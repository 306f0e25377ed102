"""The probe child: throwaway processes of the *target* interpreter.

Started by ``_transport.py`` as ``python -c BOOT this_file FD``. The process that
starts is a *zygote*: it loads the probe's own code, never runs job code, and on
request forks a *worker* for one target (a Unix socket arrives with the request,
SCM_RIGHTS). Each worker starts from the same pristine state, so nothing one target
does (env, cwd, umask, signal handlers, leaked interpreters, memory) reaches another.

A worker runs in its own session (process group) under an address-space limit, dies
with its zygote (``PR_SET_PDEATHSIG``), sees stdin as empty and serves JSON lines on
its socket; whatever job code prints goes to a per-worker file. The zygote is a
child subreaper: when a worker is reaped, every process it left behind is killed.
If the zygote's own parent dies (the CLI was killed), it kills its workers, removes
the scratch directory and exits.

Each ``trial`` runs in a brand-new isolated sub-interpreter, so a failed import is
never retried where it already failed. If a trial kills or hangs a worker, the
parent reads the breadcrumb file to name the extension.

Stdlib only: the target may be a venv where subcompat is not installed.
"""

import sys

_STARTUP = frozenset(sys.modules)  # what the interpreter itself loaded: before any of ours

import importlib.util  # noqa: E402 - after the snapshot
import json  # noqa: E402
import marshal  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402

PROTOCOL = 1
HERE = os.path.dirname(os.path.abspath(__file__))
#: What a fresh ``python -c`` gives its code: the job sees this, not the worker's own
#: ``['-c', '.../_child.py', FD]`` (numpy.f2py.__main__ would parse this file as Fortran).
JOB_ARGV = ("-c",)
#: The only source a step sends into a trial's interpreter: the step's argument goes as
#: data (marshal bytes, bound in ``__main__``), so a step is never too big to send.
_STEPS = {name: "%s(_sc_arg)\n" % name for name in ("_begin", "_lazy_step", "_check_refs", "_finish")}


def _load_sibling(name):
    spec = importlib.util.spec_from_file_location("_subcompat_" + name, os.path.join(HERE, name + ".py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses needs the module registered
    spec.loader.exec_module(module)
    return module


_support = _load_sibling("_support")  # once, at import: Backend() is built from many threads
_bounded = _load_sibling("_bounded")  # reads files job code could have swapped (FIFO, /dev/zero)
_reap = _load_sibling("_reap")  # kills and reaps stray processes
_PyCF_ONLY_AST = 0x400
# per zygote, in the names of its workers' files: in a PID namespace of its own, every
# zygote's workers have the same small pids, and the scratch directory is shared
_TOKEN = os.urandom(6).hex()


def _literal_eval(text, name):
    """``ast.literal_eval`` for what ``_trial._literal`` writes (None, bools, str, int, and
    lists, tuples and dicts of them), on the tree ``compile`` builds: no module imported."""
    return _literal_node(compile(text, name, "eval", _PyCF_ONLY_AST).body)


def _literal_node(node):
    kind = type(node).__name__
    if kind == "Constant":
        return node.value
    if kind in ("List", "Tuple", "Set"):
        items = [_literal_node(e) for e in node.elts]
        return tuple(items) if kind == "Tuple" else items
    if kind == "Dict":
        return {_literal_node(k): _literal_node(v) for k, v in zip(node.keys, node.values, strict=True)}
    if kind == "UnaryOp" and type(node.op).__name__ == "USub":
        value = _literal_node(node.operand)
        if type(value) in (int, float):
            return -value
    raise ValueError("not a literal: %s" % kind)


_UNSUPPORTED_3_12 = (
    "Python 3.12 has isolated sub-interpreters with their own GIL in its C API (PEP 684) but no "
    "supported Python API for them (only the private test module _xxsubinterpreters; _interpreters, "
    "which subcompat and chancy's executor use, came in 3.13): use Python 3.13 or newer"
)
_UNSUPPORTED_OLD = (
    "Python %d.%d has no isolated sub-interpreters with their own GIL (C API in 3.12, "
    "Python module in 3.13): use Python 3.13 or newer" % sys.version_info[:2]
)


class Backend:
    """Creates, runs code in and destroys one interpreter per trial."""

    name = None
    unsupported = None

    def __init__(self):
        if _support.no_subinterpreters():
            self.unsupported = _UNSUPPORTED_3_12 if sys.version_info[:2] == (3, 12) else _UNSUPPORTED_OLD
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

    def bind(self, name, value):
        """Set ``__main__.name`` to ``value`` (a str: shareable everywhere)."""
        self._low.set___main___attrs(self._iid, {name: value})

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
        except self._high.ExecutionFailed as exc:  # 3.14+: str() appends the whole traceback
            info = getattr(exc, "excinfo", None)
            return getattr(info, "formatted", None) or str(exc).partition("\n")[0]

    def bind(self, name, value):
        self._interp.prepare_main({name: value})

    def close(self):
        self._interp.close()


class _MainSession:
    """This process's main interpreter (is the module broken everywhere?). The job's
    ``sys.path`` holds only while a step runs: between steps, what this process imports
    for itself comes from its own clean path, never from the project's files."""

    def __init__(self):
        self._namespace = {"__name__": "__subcompat_trial__"}
        self._job_path = None

    def exec(self, code, source=None):
        if isinstance(code, str):
            code = compile(code, "<subcompat-trial>", "exec")
        own = list(sys.path)
        if self._job_path is not None:
            sys.path[:] = self._job_path
        try:
            exec(code, self._namespace)
        finally:
            try:
                self._job_path = list(sys.path)
                sys.path[:] = own
            except BaseException:  # sys.path replaced by job code: put a list back
                sys.path = own
        return None

    def bind(self, name, value):
        self._namespace[name] = value

    def close(self):
        self._namespace.clear()


def describe_interpreter(backend, sys_path):
    """What the parent keys its cache on; also called in-process by the parent."""
    import importlib.machinery

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
        "ext_suffixes": list(importlib.machinery.EXTENSION_SUFFIXES),
        "extra_finders": _extra_finders(),
        "builtin_modules": sorted(sys.builtin_module_names),
    }


def _absent(names, path):
    """The top-level ``names`` no finder of this interpreter finds on ``path``. Nothing is
    imported: the path finder looks with the job's path given to it, the other finders
    (installed hooks) are asked as an import would ask them; our own ``sys.path`` stays."""
    import importlib.machinery as machinery

    out = []
    for name in names:
        found = False
        for finder in sys.meta_path:
            try:
                if finder is machinery.PathFinder:
                    found = machinery.PathFinder.find_spec(name, path) is not None
                else:
                    find = getattr(finder, "find_spec", None)
                    found = find is not None and find(name, None) is not None
            except Exception:
                found = True  # a hook that cannot tell: let the probe import it
            if found:
                break
        if not found:
            out.append(name)
    return out


def _extra_finders():
    """Import hooks beyond the standard ones (a .pth may add an editable install's
    finder): with any, only the interpreter itself can say that a module is absent."""
    import importlib.machinery as machinery

    standard = (machinery.BuiltinImporter, machinery.FrozenImporter, machinery.PathFinder)
    out = [
        type(f).__qualname__ if not isinstance(f, type) else f.__qualname__
        for f in sys.meta_path
        if f not in standard and type(f) not in standard
    ]
    hooks = [
        h
        for h in sys.path_hooks
        if getattr(h, "__name__", "") != "path_hook_for_FileFinder"
        and h is not getattr(__import__("zipimport"), "zipimporter", None)
    ]
    out += [getattr(h, "__qualname__", repr(h)) for h in hooks]
    return out


class Child:
    def __init__(self):
        self.backend = Backend()
        self._dists = None
        self._dist_memo = {}
        self._scan_memo = {}
        self.sys_path = _job_sys_path()
        self.counter = 0
        self._discover = self._locator = self._trial_source = None
        self._pair = None  # the two interpreters of a pair worker
        self._loads = {}  # package -> the extensions importing it loaded (a sampler worker)
        self._under = None  # the package a main_under worker imported (and whether it did)
        self._under_ok = False

    def warm(self):
        """Load in the zygote what every worker needs, so each fork starts with it."""
        self.locator  # noqa: B018 - loads discover too
        self.trial_source  # noqa: B018
        self._find_dist("")

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
        """Import ``names`` in this worker's main interpreter: is the module broken
        everywhere? The worker was forked for this alone, from a zygote that never ran
        job code. Each run is written to its own file as soon as it is done, so a crash
        on a later name keeps the earlier runs. The runs come back raw: another worker
        describes them (``op_describe``), outside whatever the job did to this one."""
        _forget_own_imports()
        return self._dump_main(req)

    def _dump_main(self, req):
        stem = req["stem"]
        for i, raw in enumerate(self._main_imports(req)):
            _dump_file(stem + "-%d.json" % i, raw)
        return {}

    def op_main_under(self, req):
        """``op_main`` for a module of the package ``under``, which this worker imported in
        its main interpreter once, at its first request: each request forks and the fork
        imports ``names`` on top of it. Every module still gets a main interpreter of its
        own, in the state its own import reaches first anyway (its package imported), for
        the cost of a fork instead of a process importing the package again."""
        import time

        under = req["under"]
        under_s = 0.0
        if self._under is None:
            started = time.perf_counter()
            self._under = under
            _forget_own_imports()
            raw = self._run(dict(req, name=under, function=None, refs=None), "main")
            self._under_ok = raw.get("error") is None
            under_s = time.perf_counter() - started
        if self._under != under or not self._under_ok:
            return {"state": "unusable"}
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                self._dump_main(req)  # on top of the package: nothing is forgotten
            except BaseException:
                code = 70
            finally:
                _exit(code)
        _, status = os.waitpid(pid, 0)
        return {"state": "done", "status": status, "under_s": under_s}

    def op_pair(self, req):
        """Import ``names`` (extensions one fresh interpreter loaded) in two live isolated
        interpreters, one after the other, each from its own thread, then read their module
        attributes in both at once: what a pool sees and one interpreter cannot (state the
        process shares between interpreters). The two interpreters live as long as this
        worker and serve its later requests; they are never destroyed (an object they
        share would be freed by both): the worker is killed when the probe is done."""
        if self.backend.unsupported:
            raise RuntimeError(self.backend.unsupported)
        if self._pair is None:
            self._pair = [self.backend.open(), self.backend.open()]
            for session in self._pair:
                session.exec(*self.trial_source)
        self.counter += 1
        names = req["names"]
        stem = "%s/pair-%s-%d-%d-" % (req["workdir"], _TOKEN, os.getpid(), self.counter)
        for i, session in enumerate(self._pair):
            session.bind("_sc_names", "\0".join(names))
            session.bind("_sc_files", "\0".join(req["files"]))
            session.bind("_sc_path", "\0".join(req.get("sys_path") or self.sys_path))
            session.bind("_sc_crumbs", req["breadcrumb"])
            session.bind("_sc_imported", stem + "%d-imported" % i)
            session.bind("_sc_touched", stem + "%d-touched" % i)
        for session in self._pair:  # the second imports while the first is alive
            _threads([session], "_pair_import(_sc_names, _sc_files, _sc_path, _sc_crumbs, _sc_imported)\n")
        _threads(self._pair, "_pair_touch(_sc_names, _sc_crumbs, _sc_touched)\n")
        reads = [[self._read(stem + "%d-%s" % (i, step)) for step in ("imported", "touched")] for i in (0, 1)]
        return {"results": _compare_pair(names, *reads)}

    def op_loads(self, req):
        """Import an installed package in this worker's main interpreter: the extension
        modules it loads there (described). The worker serves the whole probe, one package
        at a time, and never runs job code; a package already imported answers with what
        it loaded then."""
        import importlib
        import importlib.machinery

        package = req["package"]
        if package not in self._loads:
            sys.path[:] = req.get("sys_path") or self.sys_path  # the job's, not our clean one
            before = set(sys.modules)
            try:
                importlib.import_module(package)
            except BaseException:
                pass  # what loaded before it gave up still counts
            suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
            self._loads[package] = found = []
            for name in sorted(set(sys.modules) - before):
                file = getattr(sys.modules.get(name), "__file__", None)
                if isinstance(name, str) and isinstance(file, str) and file.endswith(suffixes):
                    found.append(self._describe(name, file, True))
        return {"modules": self._loads[package]}

    def op_describe(self, req):
        return {"result": self._post(req["result"])}

    def _main_imports(self, req):
        """The job first (with its function), then each extra name, in one main interpreter."""
        for i, name in enumerate(req["names"]):
            run = dict(req, name=name)
            if i:  # the job's function and name references are the job's
                run.update(function=None, refs=None)
            yield self._run(run, "main")

    def _run(self, req, where):
        self.counter += 1
        os.makedirs(req["workdir"], 0o700, exist_ok=True)  # an earlier job may have removed it
        result_path = req["workdir"] + "/result-%s-%d-%d.txt" % (_TOKEN, os.getpid(), self.counter)
        params = {
            k: v
            for k, v in req.items()
            if k not in ("v", "id", "nonce", "op", "workdir", "names", "stem", "refs")
        }
        params.update(sys_path=req.get("sys_path") or self.sys_path, result=result_path, argv=list(JOB_ARGV))
        if where == "main":
            session = _MainSession()
        else:
            session = self.backend.open(shared_gil=bool(req.get("shared_gil")))
        try:
            uncaught = session.exec(*self.trial_source) or _step(session, "_begin", params)
            step = self._read(result_path)
            leftover = []
            scan = _Scan()
            if step is not None and step["scan"]:
                leftover = self._deferred(session, params, step, result_path, scan)
            if step is not None:
                asked = scan.asked() if where == "sub" else [tuple(r) for r in req.get("refs") or ()]
                self._check_refs(session, asked, load=where == "main")
                uncaught = _step(session, "_finish", leftover)
            result = self._read(result_path)
        finally:
            session.close()
            try:
                os.unlink(result_path)
            except OSError:
                pass
        if result is None:
            raise RuntimeError("trial left no result: %s" % (uncaught or "unknown failure"))
        found = result.get("refs") or ()
        result["refs"] = scan.located(found) if where == "sub" else [_ref(*r) for r in found]
        return result

    @staticmethod
    def _check_refs(session, asked, load):
        """Ask the interpreter which of the (module, name) pairs ``asked`` it lacks."""
        if not asked:
            return None
        return _step(session, "_check_refs", [[list(pair) for pair in asked], bool(load)])

    def _post(self, result):
        result["modules"] = [self._describe(name, file, ext) for name, file, ext in result["modules"]]
        result["refs"] = [r for r in result.get("refs") or () if self._foreign(r)]
        present = {m["name"] for m in result["modules"]}
        every_failure = result["failures"] + [f for lz in result["lazy"] for f in lz.get("failures", ())]
        for f in every_failure:  # failed loads never reach sys.modules; keep them in the tree
            if f["name"] not in present and f.get("file"):
                present.add(f["name"])
                result["modules"].append(self._describe(f["name"], f["file"], True))
        return result

    def _deferred(self, session, params, step, result_path, scan):
        """Feed the interpreter the deferred imports of its first-party modules, batch by
        batch, until none is new; return what is left after a failure."""
        queue = [list(x) for x in params.get("pending") or ()]
        queue += self._scan(params.get("sources") or (), scan)
        queue += self._scan(step["new"], scan)
        while queue:
            _step(session, "_lazy_step", queue)
            step = self._read(result_path)
            if step is None:
                return []
            more = self._scan(step["new"], scan)
            if step["failed"]:
                return step["leftover"] + more
            queue = more
        return []

    def _scan(self, sources, scan):
        """The deferred imports not seen yet in these sources; their name references
        are collected in ``scan``."""
        out = []
        for entry in sources:
            mod_name, file, is_pkg = entry[0], entry[1], entry[2]
            all_imports = bool(entry[3]) if len(entry) > 3 else False
            if file in scan.files or self.locator.origin(file) != "first_party":
                continue
            scan.files.add(file)
            lazy, refs = self._parsed(mod_name, file, is_pkg, all_imports)
            for lz in lazy:
                key = (lz[0], tuple(lz[1]))
                if key not in scan.seen:
                    scan.seen.add(key)
                    out.append(lz)
            if self._own(mod_name):  # an installed distribution's names are its own business
                scan.own.add(mod_name)
                for module, attr, edge in refs:
                    scan.refs.setdefault((module, attr), edge)
        return out

    def _own(self, mod_name):
        """First-party source that no installed distribution owns: the user's code (a
        package on PYTHONPATH with a dist-info is someone else's)."""
        return self._dist_of(mod_name, "first_party")[0] is None

    def _parsed(self, mod_name, file, is_pkg, all_imports):
        """(deferred imports, name references) of one file: one parse per content
        (stat) for this child."""
        try:
            st = os.stat(file)
        except OSError:
            return [], []
        key = (mod_name, file, is_pkg, all_imports, st.st_mtime_ns, st.st_size)
        found = self._scan_memo.get(key)
        if found is None:
            source = self.discover.scan_source(mod_name, file, is_package=is_pkg, all_imports=all_imports)
            found = self._scan_memo[key] = (
                [[lz.module, list(lz.fromlist), *_edge(lz.edge)] for lz in source.lazy],
                [(ref.module, ref.attr, _edge(ref.edge)) for ref in source.refs],
            )
        return found

    def _foreign(self, ref):
        """A reference to a module that is not the user's (where the accelerators are)."""
        first_party = self.locator.origin(ref.pop("file", None)) == "first_party"
        return ref["module"] != "__main__" and not (first_party and self._own(ref["module"]))

    @staticmethod
    def _read(path):
        """A step's result: a Python literal, read bounded and parsed without importing
        ``ast`` (after job code ran here, that name may be the project's own module)."""
        try:
            raw, _ = _bounded.read_regular(path, MAX_LINE)
            os.unlink(path)
            return _literal_eval(raw.decode("utf-8", "replace"), path)
        except (OSError, _bounded.Refused, ValueError, SyntaxError, MemoryError, RecursionError):
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
                self._dists = _packages_distributions(md, self.sys_path)
            except Exception:
                self._dists = {}
        for dist in self._dists.get(top, []):
            path = getattr(dist, "_path", None)
            stamp = None
            if path is not None:
                for candidate in ("RECORD", "METADATA"):
                    p = os.path.join(str(path), candidate)
                    if os.path.exists(p):
                        stamp = p
                        break
            try:
                return dist.metadata["Name"], dist.version, stamp
            except Exception:
                continue
        return None, None, None


def _packages_distributions(md, path):
    """Top-level import name -> the distributions that provide it, found on the job's
    ``path`` (not on this process's own, which holds none of the project's entries)."""
    found = {}
    seen = set()
    for dist in md.distributions(path=path):
        try:
            name = dist.metadata["Name"]
            if not name or name.lower() in seen:  # the first on the path wins, as in an import
                continue
            seen.add(name.lower())
            tops = (dist.read_text("top_level.txt") or "").split()
            if not tops:
                for file in dist.files or ():
                    parts = file.parts
                    if len(parts) > 1 and not parts[0].endswith((".dist-info", ".egg-info")):
                        tops.append(parts[0])
                    elif len(parts) == 1 and file.suffix == ".py":
                        tops.append(file.stem)
                    elif len(parts) == 1 and "." in parts[0] and not parts[0].endswith(".pth"):
                        tops.append(parts[0].split(".")[0])
        except Exception:
            continue
        for top in dict.fromkeys(tops):
            found.setdefault(top, []).append(dist)
    return found


def _forget_own_imports():
    """Before a main-interpreter import of the job: drop from ``sys.modules`` what this
    process imported for itself (json, socket, ...), so the job imports them as a fresh
    process would, from its own path (a project's ``json.py`` shadows the stdlib here as
    it does in production). Our own code keeps the objects it holds."""
    for name in list(sys.modules):
        if name not in _STARTUP and not name.startswith("_subcompat_"):
            del sys.modules[name]


def _step(session, name, arg):
    """Run the trial step ``name(arg)`` in ``session``; ``arg`` (lists, dicts, strings,
    numbers) is bound as marshal bytes, shareable on every backend, and decoded inside."""
    session.bind("_sc_arg", marshal.dumps(arg))
    return session.exec(_STEPS[name])


def _threads(sessions, code):
    """Run ``code`` in each session, each from a thread of its own, all released at once."""
    import threading

    barrier = threading.Barrier(len(sessions))

    def run(session):
        barrier.wait()
        session.exec(code)

    threads = [threading.Thread(target=run, args=(s,), daemon=True) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _compare_pair(names, first, second):
    """What the second live interpreter saw differently: per name, ok | raised | shared
    (with the attributes that are one object in both) | unchecked (the first interpreter
    could not import it either: nothing to compare)."""
    (imported_a, touched_a), (imported_b, touched_b) = first, second
    import_a, import_b = dict(imported_a or ()), dict(imported_b or ())
    touch_a = {n: (e, dict(v)) for n, e, v in touched_a or ()}
    touch_b = {n: (e, dict(v)) for n, e, v in touched_b or ()}
    out = {}
    for name in names:
        if name not in import_a or import_a[name] is not None:
            out[name] = {"state": "unchecked", "detail": import_a.get(name) or "not imported"}
        elif import_b.get(name, "not imported") is not None:
            out[name] = {"state": "raised", "detail": "importing it: %s" % import_b.get(name, "not imported")}
        elif name not in touch_a or name not in touch_b:
            out[name] = {"state": "unchecked", "detail": "its attributes were not read"}
        elif touch_b[name][0] is not None and touch_a[name][0] is None:
            out[name] = {"state": "raised", "detail": "reading its attributes: %s" % touch_b[name][0]}
        else:
            ids_a, ids_b = touch_a[name][1], touch_b[name][1]
            same = sorted(a for a, i in ids_a.items() if ids_b.get(a) == i)
            out[name] = {"state": "shared", "attrs": same} if same else {"state": "ok"}
    return out


def _ref(module, name, state, file, edge=None):
    return {"module": module, "attr": name, "state": state, "file": file, "edge": edge}


def _edge(edge):
    return [edge.importer, edge.file, edge.line, edge.how]


class _Scan:
    """What the scans of one trial's first-party files found."""

    def __init__(self):
        self.files = set()
        self.own = set()  # first-party module names: their names are not checked
        self.seen = set()
        self.refs = {}  # (module, name) -> edge of its first use

    def asked(self):
        return [pair for pair in self.refs if pair[0] not in self.own]

    def located(self, found):
        """The interpreter's answers ([module, name, state, file]) with where each is used."""
        out = []
        for module, name, state, file in found:
            edge = self.refs.get((module, name))
            if edge is not None:
                out.append(_ref(module, name, state, file, edge))
        return out


# -- processes -------------------------------------------------------------
# Bound now, in the zygote: job code run in a worker's main interpreter (the main
# pass) may replace builtins or module attributes; the worker's own loop must not care.
_dumps = json.dumps
_loads = json.loads
_os_read = os.read
_os_write = os.write
_exit = os._exit
MAX_LINE = 64 << 20  # a request or reply longer than this is a violation
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
_libc: "list[object]" = []


def _prctl(option, arg):
    """Linux ``prctl``; False where it is unavailable (then the parent's kill is all)."""
    try:
        if not _libc:
            before = set(sys.modules)
            import ctypes

            _libc.append(ctypes.CDLL(None, use_errno=True))
            for name in set(sys.modules) - before:  # a main-pass worker must not find them
                del sys.modules[name]
        return _libc[0].prctl(option, arg, 0, 0, 0) == 0
    except Exception:
        return False


def _dump_file(path, obj):
    """Write JSON whole or not at all: a reader never sees half a file."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        data = _dumps(obj).encode("utf-8", "replace")
        while data:
            data = data[_os_write(fd, data) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _safe_text(exc):
    try:
        return "%s: %s" % (type(exc).__name__, exc)
    except BaseException:
        return "%s (unprintable)" % type.__name__.__get__(type(exc))


def _serve(child, fd):
    """A worker's loop: one JSON request per line, one reply per line, until EOF.
    Every reply echoes the request's id and nonce: the parent drops anything else."""
    buf = b""
    while True:
        while b"\n" not in buf:
            chunk = _os_read(fd, 1 << 16)
            if not chunk or len(buf) > MAX_LINE:
                return
            buf += chunk
        line, _, buf = buf.partition(b"\n")
        req = _loads(line)
        reply = {"v": PROTOCOL, "id": req.get("id"), "nonce": req.get("nonce")}
        handler = getattr(child, "op_" + str(req.get("op")), None)
        try:
            if handler is None:
                raise ValueError("unknown op %r" % req.get("op"))
            reply.update(handler(req))
            reply["ok"] = True
        except BaseException as exc:  # job code may raise anything, SystemExit included
            reply.update(ok=False, error=_safe_text(exc))
        data = (_dumps(reply) + "\n").encode("utf-8", "replace")
        while data:
            data = data[_os_write(fd, data) :]


class Zygote:
    """Forks one worker per request from a state no job code has touched."""

    def __init__(self, ctl):
        self.ctl = ctl
        self.parent = os.getppid()
        self.child = Child()
        self.live = set()
        self.workdirs = set()
        self.warm = False
        self.bye = False  # the parent said goodbye: it is alive and cleans up itself

    def run(self):
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self.parent:
            self._die(orphaned=True)
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        while True:
            try:
                msg, fds, _flags, _addr = socket.recv_fds(self.ctl, 1 << 20, 4)
            except OSError:
                msg, fds = b"", []
            if not msg:
                self._die(orphaned=not self.bye)
            req = _loads(msg)
            if req.get("op") == "bye":
                self.bye = True
                continue
            try:
                reply = self.handle(req, fds)
            except Exception as exc:
                reply = {"ok": False, "error": _safe_text(exc)}
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            self.ctl.sendall(_dumps(reply).encode())

    def handle(self, req, fds):
        op = req.get("op")
        if op == "hello":
            return dict(describe_interpreter(self.child.backend, self.child.sys_path), ok=True)
        if op == "fork":
            return {"ok": True, "pid": self.fork(fds[0], req, fds[1] if len(fds) > 1 else None)}
        if op == "reap":
            return dict(self.reap(int(req["pid"])), ok=True)
        if op == "locate":
            return {"ok": True, "absent": _absent(req["names"], req.get("sys_path") or self.child.sys_path)}
        raise ValueError("unknown op %r" % op)

    def fork(self, sock_fd, req, out_fd=None):
        if req.get("warm") and not self.warm:  # what trial workers need, loaded once, shared
            self.child.warm()
            self.warm = True
        self.workdirs.add(req["workdir"])
        pid = os.fork()
        if pid:
            self.live.add(pid)
            return pid
        code = 0
        try:
            self._become_worker(sock_fd, req, out_fd)
            _serve(self.child, sock_fd)
        except BaseException:
            code = 70
        finally:
            _exit(code)

    def _become_worker(self, sock_fd, req, out_fd=None):
        zygote = os.getppid()
        self.ctl.close()
        os.setsid()  # its own process group: the parent kills it and all it forked at once
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != zygote:
            _exit(0)
        _prctl(PR_SET_CHILD_SUBREAPER, 0)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)  # job code reading stdin sees EOF
        os.close(null)
        # job output: a pipe the parent drains, keeping only its tail (nothing on disk);
        # else a file in the scratch directory, made again if job code removed it
        os.makedirs(req["workdir"], 0o700, exist_ok=True)
        if out_fd is not None:
            out = os.dup(out_fd)
            os.close(out_fd)
        else:
            out = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.close(out)
        import resource

        limits = [(resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, 1 << 30)]
        if req.get("memory"):
            limits.append((resource.RLIMIT_AS, int(req["memory"])))
        for which, value in limits:
            try:
                resource.setrlimit(which, (value, value))
            except (ValueError, OSError):
                pass

    def reap(self, pid):
        """Kill a worker with everything in its process group, reap it, then kill and
        reap whatever it left behind (reparented to us, the subreaper)."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        if pid not in self.live:  # not ours (a zygote started after the first was lost)
            return {"signal": None, "code": None}
        status = maxrss = None
        try:
            _pid, status, usage = os.wait4(pid, 0)
            maxrss = usage.ru_maxrss
        except ChildProcessError:
            pass
        self.live.discard(pid)
        self.sweep(pid)
        out = {"signal": None, "code": None, "maxrss_kb": maxrss}
        if status is not None and os.WIFSIGNALED(status):
            out["signal"] = os.WTERMSIG(status)
        elif status is not None:
            out["code"] = os.WEXITSTATUS(status)
        return out

    def sweep(self, group=None, rounds=400):
        """Until the group is empty and no stray child is left (bounded: ~2 s)."""
        import time

        for _ in range(rounds):
            stray = _children() - self.live
            _reap.kill_and_reap(stray)
            alive = False
            if group is not None:
                try:
                    os.killpg(group, 0)
                    alive = True
                except OSError:
                    pass
            if not stray and not alive:
                return
            time.sleep(0.005)

    def _on_signal(self, *_):
        """PR_SET_PDEATHSIG fires when the parent *thread* that started us ends, too:
        only a closed socket says the parent process is gone (then clean up for it)."""
        import select

        gone = False
        try:
            if select.select([self.ctl], [], [], 0.5)[0]:
                gone = self.ctl.recv(1 << 20, socket.MSG_PEEK) == b""
        except OSError:
            gone = True
        self._die(orphaned=gone and not self.bye)

    def _die(self, orphaned=False):
        for pid in list(self.live):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.live.clear()
        self.sweep(rounds=100)
        if orphaned or os.getppid() != self.parent:  # nobody else will clean up
            import shutil

            for workdir in self.workdirs:
                shutil.rmtree(workdir, ignore_errors=True)
        _exit(0)


def _children():
    """This process's children (Linux ``/proc``); empty where that is unavailable."""
    me = os.getpid()
    pids = set()
    try:
        with open("/proc/%d/task/%d/children" % (me, me), encoding="ascii") as fh:
            return {int(p) for p in fh.read().split()}
    except (OSError, ValueError):
        pass
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, encoding="ascii", errors="replace") as fh:
                stat = fh.read()
            if int(stat.rpartition(")")[2].split()[1]) == me:
                pids.add(int(entry))
        except (OSError, ValueError, IndexError):
            continue
    return pids


_JOB_ENV = "SUBCOMPAT_JOB_ENV"  # the variables the parent held back from our start-up
_HELD: "dict[str, str | None]" = {}


def _restore_environment():
    """This process started isolated from the project: no ``PYTHONPATH`` and a safe path
    (``PYTHONSAFEPATH``), so nothing of the project's (a root ``types.py``, ``signal.py``,
    ``json.py``) was imported in place of the stdlib. Put back the environment the job
    would have had, for the workers and what they start."""
    raw = os.environ.pop(_JOB_ENV, None)
    if raw is None:
        return
    held = json.loads(raw)
    _HELD.update(held)
    for key, value in held.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _job_sys_path():
    """The ``sys.path`` the job has in production: what ``python -c`` started from the
    same directory with the same environment would have (the directory first, unless a
    safe path was asked for; then ``PYTHONPATH``, made absolute; then ours)."""
    path = [p for p in sys.path if p]
    if not _HELD:  # started without isolation (by hand)
        return [os.getcwd() if p == "" else p for p in sys.path]
    front = [] if _HELD.get("PYTHONSAFEPATH") else [os.getcwd()]
    for entry in (_HELD.get("PYTHONPATH") or "").split(os.pathsep) if _HELD.get("PYTHONPATH") else ():
        front.append(os.path.abspath(entry))
    return front + path


def main(fd):
    _restore_environment()
    sys.argv[:] = JOB_ARGV  # every worker forks with it; _begin sets it in each sub-interpreter
    Zygote(socket.socket(fileno=fd)).run()


if __name__ == "__subcompat_child__":
    main(int(sys.argv[2]))
