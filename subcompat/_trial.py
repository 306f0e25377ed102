"""Runs inside one fresh sub-interpreter: import one candidate and report what happened.

The probe child executes this file's source in a new interpreter, then drives it in
steps: ``_begin(params)`` imports the candidate, ``_lazy_step(batch)`` imports deferred
targets that the child found by scanning first-party source in *its* main interpreter
(the parser and its memo live there, not in every sub-interpreter), ``_finish(leftover)``
writes the report. Each step's argument arrives as data, marshal bytes bound in
``__main__`` (never as source: no list is too long to send). Each step writes a Python
literal to ``params["result"]`` (no json: it would import ``re`` into an interpreter
that must stay as fresh as the job finds it).
Stdlib only, and nothing imported before the candidate that the candidate might need.

Two hooks make the report exact:
- a ``sys.meta_path`` tracer records who imported each module (file and line);
- ``ExtensionFileLoader`` is wrapped so that every extension load is recorded, with
  its dotted name and file, even when the package catches the ImportError and falls
  back (degraded) or re-raises its own message (numpy-style wrapping). A breadcrumb
  file names the extension being loaded if this process dies or hangs.
"""

import builtins as _builtins
import marshal as _marshal  # loaded by every interpreter's import system: nothing new here
import sys

# A private copy of the builtins: job code that replaces ``builtins.open`` or
# ``__import__`` changes the interpreter's, not the ones this file's functions use.
__builtins__ = dict(_builtins.__dict__)  # type: ignore[assignment]
del _builtins
_unpack = _marshal.loads  # held before job code runs: it may replace module attributes
del _marshal


def _text(obj):
    """``str(obj)`` that survives a ``__str__`` that raises or returns garbage."""
    try:
        text = str(obj)
        if type(text) is str:
            return text
    except BaseException:
        pass
    try:
        return "<unprintable %s>" % type(obj).__name__
    except BaseException:
        return "<unprintable>"


def _literal(obj):
    """``repr`` restricted to literals, safe for str/int subclasses from foreign code."""
    if obj is None or obj is True or obj is False:
        return repr(obj)
    if isinstance(obj, str):
        return str.__repr__(obj)
    if isinstance(obj, int):
        return int.__repr__(obj)
    if isinstance(obj, dict):
        return "{" + ", ".join(_literal(k) + ": " + _literal(v) for k, v in obj.items()) + "}"
    if isinstance(obj, (list, tuple, set, frozenset)):
        return "[" + ", ".join(_literal(x) for x in obj) + "]"
    return str.__repr__(_text(obj))


def _write(P, data):
    _emit(P["os"], P["result"], data)


def _emit(os, path, data):
    text = _literal(data).encode("utf-8", "replace")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except FileNotFoundError:  # job code removed the probe's scratch directory: make it again
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while text:
            text = text[os.write(fd, text) :]
    finally:
        os.close(fd)


def _note(os, path, text):
    """One breadcrumb line (the parent names what was under way if the process dies)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except FileNotFoundError:  # the scratch directory was removed: make it again
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (text + "\n").encode("utf-8", "replace"))
    finally:
        os.close(fd)


def _begin(arg):
    P = _unpack(arg)
    sys.argv = list(P["argv"])  # a fresh `python -c`'s, not the probe worker's
    import os

    P["os"] = os  # the module object, held before job code can swap sys.modules entries
    import importlib
    import importlib.machinery as machinery
    import importlib.util

    sys.path[:] = P["sys_path"]  # after the probe's own imports: a root types.py is not ours

    crumb_path = P["breadcrumb"]

    def crumb(text):
        _note(os, crumb_path, text)

    loader_cls = machinery.ExtensionFileLoader
    orig_create = loader_cls.create_module
    orig_exec = loader_cls.exec_module
    failures = []

    def record_failure(spec, phase, exc):
        failures.append(
            {
                "name": spec.name,
                "file": spec.origin,
                "phase": phase,
                "type": type(exc).__name__,
                "msg": _text(exc),
            }
        )

    # frames of the import machinery and of this script are nobody's import statement
    skip_files = ("<frozen importlib", importlib.__file__, sys._getframe().f_code.co_filename)
    in_progress = []  # (extension name, the Python frame that asked for it)

    def caller(depth):
        """The nearest frame outside the import machinery, ``depth`` frames up."""
        frame = sys._getframe(depth)
        while frame is not None and frame.f_code.co_filename.startswith(skip_files):
            frame = frame.f_back
        return frame

    def guarded(phase, spec, call):
        crumb("+" + spec.name + "\t" + str(spec.origin))
        in_progress.append((spec.name, caller(3)))
        try:
            return call()
        except BaseException as exc:
            record_failure(spec, phase, exc)
            raise
        finally:
            in_progress.pop()
            crumb("-" + spec.name)

    def create_module(self, spec):
        return guarded("create", spec, lambda: orig_create(self, spec))

    def exec_module(self, module):
        return guarded("exec", module.__spec__, lambda: orig_exec(self, module))

    loader_cls.create_module = create_module
    loader_cls.exec_module = exec_module

    edges = {}
    asked = {}  # name -> the path its finders were first given (what a failure depends on)
    not_found = set()  # modules a ModuleNotFoundError named: their absence is a finding

    class Tracer:
        @staticmethod
        def find_spec(name, path=None, target=None):
            try:
                if name not in edges:
                    trace(name)
                if name not in asked:
                    asked[name] = path
            except BaseException:  # never the reason an import fails
                pass
            return None

    def trace(name):
        """Record who imported ``name`` (the first importer wins)."""
        frame = caller(3)
        if in_progress and in_progress[-1][1] is frame:
            # imported from C by the extension being initialised
            edges[name] = [in_progress[-1][0], None, None, "import"]
        elif frame is not None:
            edges[name] = [
                frame.f_globals.get("__name__") or "",
                frame.f_code.co_filename,
                frame.f_lineno,
                "import",
            ]

    def describe(exc):
        chain = []
        seen = set()
        cur = exc
        while cur is not None and id(cur) not in seen and len(chain) < 16:
            seen.add(id(cur))
            chain.append({"type": type(cur).__name__, "msg": _text(cur)})
            if isinstance(cur, ModuleNotFoundError) and type(getattr(cur, "name", None)) is str:
                not_found.add(cur.name)
            try:
                cur = cur.__cause__ or cur.__context__
            except BaseException:
                cur = None
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        where = None
        if tb is not None:
            where = "%s:%s" % (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        out = {"type": type(exc).__name__, "msg": _text(exc), "chain": chain, "where": where}
        missing = _missing_name(exc)
        if missing is not None:
            out["attr"] = missing
        return out

    def import_one(name, fromlist, function=None):
        if fromlist:  # what `from name import a, b` imports; a missing name is _check_refs'
            module = __import__(name, fromlist=fromlist)
        else:
            module = importlib.import_module(name)
        found = module
        for part in function.split(".") if function else ():  # `Class.method` too
            found = getattr(found, part, None)
        if function and not callable(found):
            raise AttributeError(f"module {name!r} has no function {function!r}")

    def missing_only(exc, name):
        """A ModuleNotFoundError for the candidate itself: nothing half-loaded here."""
        missing = getattr(exc, "name", None) or ""
        return isinstance(exc, ModuleNotFoundError) and (name == missing or name.startswith(missing + "."))

    # What the runtime (e.g. chancy's job wrapper) loads or skips in every
    # sub-interpreter is not the job's doing: import it first, keep it out of the tree.
    baseline = []
    preload_error = None
    for pre in P.get("preload") or ():
        try:
            importlib.import_module(pre)
        except BaseException as exc:
            preload_error = describe(exc)
            break
    baseline[:] = failures
    failures.clear()

    before = set(sys.modules)
    sys.meta_path.insert(0, Tracer)
    error = None
    mode = P["mode"]
    name = P["name"]
    try:
        if preload_error is not None:  # the runtime itself cannot load here
            failures[:] = baseline
            error = preload_error
        elif mode == "job":
            import_one(name, (), P.get("function"))
        elif mode == "load":  # one extension on its own, by file, no parent package code
            spec = importlib.util.spec_from_file_location(name, P["file"])
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        elif mode != "lazy":
            raise ValueError(f"unknown trial mode {mode!r}")
    except BaseException as exc:  # the candidate's failure is the data we came for
        error = describe(exc)

    S = globals()["_S"] = {
        "P": P,
        "error": error,
        "before": before,
        "reported": set(before),
        "main_failures": list(failures),  # lazy imports carry their own
        "failures": failures,
        "edges": edges,
        "lazy": [],
        "describe": describe,
        "import_one": import_one,
        "missing_only": missing_only,
        "crumb": crumb,
        "machinery": machinery,
        "undo": (Tracer, loader_cls, orig_create, orig_exec),
        "asked": asked,
        "not_found": not_found,
    }
    scan = error is None and mode in ("job", "lazy") and P.get("lazy", True)
    _write(P, {"scan": scan, "new": _new_sources(S) if scan else []})


def _new_sources(S):
    """Python modules loaded since the last report: the child scans the first-party ones."""
    out = []
    for mod_name in _module_names():
        if mod_name in S["reported"]:
            continue
        S["reported"].add(mod_name)
        file = _attr(sys.modules.get(mod_name), "__file__")
        if type(file) is str and file.endswith(".py"):
            out.append([mod_name, file, file.endswith("__init__.py")])
    return out


def _missing_name(exc):
    """[module, name, module file] when ``exc`` says a module lacks a name (the
    AttributeError of ``mod.Name``, the ImportError of ``from mod import Name``), else None."""
    try:
        if isinstance(exc, AttributeError):
            module, name = exc.obj, exc.name
            mod_name = _attr(module, "__name__") if isinstance(module, type(sys)) else None
        elif isinstance(exc, ImportError):
            mod_name, name = exc.name, getattr(exc, "name_from", None)
            module = sys.modules.get(mod_name)
        else:
            return None
        if type(mod_name) is str and type(name) is str:
            file = _attr(module, "__file__")
            return [mod_name, name, file if type(file) is str else None]
    except BaseException:
        pass
    return None


def _check_refs(arg):
    """Which names first-party code takes from other modules are missing here.

    ``arg`` is [[module, name], ...] and ``load``. In a sub-interpreter (``load`` false)
    only modules the job loaded are asked, and only the missing names are reported; in a
    main interpreter each module is imported first, and every name gets a state."""
    S = _S  # noqa: F821 - set by _begin in this interpreter
    pairs, load = _unpack(arg)
    out = []
    for mod_name, name in pairs:
        module = _loaded(S, mod_name, load)
        if module is None:
            if load:
                out.append([mod_name, name, "unloaded", None])
            continue
        state = _lookup(module, name)
        if load or state != "present":
            file = _attr(module, "__file__")
            out.append([mod_name, name, state, file if type(file) is str else None])
    S["refs"] = out


def _loaded(S, mod_name, load):
    """The module object, imported first if ``load``; None if it is not there."""
    try:
        module = sys.modules.get(mod_name)
        if module is None and load:
            S["import_one"](mod_name, ())
            module = sys.modules.get(mod_name)
        return module if isinstance(module, type(sys)) else None
    except BaseException:
        return None


def _lookup(module, name):
    """present | missing | the error an attribute lookup raised (a PEP 562 hook)."""
    try:
        getattr(module, name)
        return "present"
    except AttributeError:
        return "missing"
    except BaseException as exc:
        return "%s: %s" % (type(exc).__name__, _text(exc))


def _module_names():
    """``sys.modules``' string keys; job code may have put anything there."""
    try:
        return [name for name in list(sys.modules) if type(name) is str]
    except BaseException:
        return []


def _attr(obj, name):
    """``getattr`` for objects job code controls (lazy proxies that raise on any access)."""
    try:
        return getattr(obj, name, None)
    except BaseException:
        return None


def _lazy_step(arg):
    """Import deferred targets in order; stop at the first real failure (never retry here)."""
    batch = _unpack(arg)
    S = _S  # noqa: F821 - set by _begin in this interpreter
    P = S["P"]
    failures = S["failures"]
    skip = set(P.get("skip") or ())
    leftover = []
    failed = False
    for i, (lz_name, fromlist, importer, file, line, how) in enumerate(batch):
        mod = sys.modules.get(lz_name)
        if mod is not None and all(_attr(mod, a) is not None for a in fromlist):
            continue
        if lz_name in skip:  # it already crashed or hung a probe: never again
            continue
        for target in (lz_name, *(lz_name + "." + a for a in fromlist)):
            S["edges"].setdefault(target, [importer, file, line, how])
        entry = {"module": lz_name, "fromlist": list(fromlist), "edge": [importer, file, line, how]}
        n_fail = len(failures)
        S["crumb"]("*" + lz_name)
        try:
            S["import_one"](lz_name, fromlist)
        except BaseException as exc:
            S["crumb"](".")
            entry["error"] = S["describe"](exc)
            entry["failures"] = failures[n_fail:]
            entry["missing"] = S["missing_only"](exc, lz_name) and len(failures) == n_fail
            S["lazy"].append(entry)
            if entry["missing"]:
                continue
            leftover = [list(q) for q in batch[i + 1 :]]
            failed = True
            break
        S["crumb"](".")  # done: a later death is not this import's
        entry["failures"] = failures[n_fail:]  # swallowed ones: degraded
        S["lazy"].append(entry)
    _write(P, {"new": _new_sources(S), "failed": failed, "leftover": leftover})


def _finish(arg):
    leftover = _unpack(arg)
    S = _S  # noqa: F821 - set by _begin in this interpreter
    Tracer, loader_cls, orig_create, orig_exec = S["undo"]
    try:
        sys.meta_path[:] = [f for f in sys.meta_path if f is not Tracer]
    except BaseException:
        pass
    loader_cls.create_module = orig_create
    loader_cls.exec_module = orig_exec
    suffixes = tuple(S["machinery"].EXTENSION_SUFFIXES)
    modules = []
    for mod_name in sorted(set(_module_names()) - S["before"]):
        mod = sys.modules.get(mod_name)
        spec = _attr(mod, "__spec__")
        file = _attr(mod, "__file__") or _attr(spec, "origin")
        if type(file) is not str or file in ("built-in", "frozen"):
            file = None
        is_ext = isinstance(_attr(spec, "loader"), loader_cls) or bool(file and file.endswith(suffixes))
        modules.append([mod_name, file, is_ext])
    _write(
        S["P"],
        {
            "error": S["error"],
            "modules": modules,
            "edges": S["edges"],
            "failures": S["main_failures"],
            "lazy": S["lazy"],
            "pending": leftover,
            "refs": S.get("refs", []),
            "unloaded": _unloaded(S),
            "looked_in": _looked_in(S),
        },
    )


MAX_UNLOADED = 1000  # lookups _unloaded makes at most (each a few cached stats)


def _unloaded(S):
    """The files of modules that were looked for, found on disk and not loaded (their
    import failed, or was abandoned): a verdict that rests on that failure depends on them."""
    loaded = set(_module_names())
    finder = S["machinery"].PathFinder
    out = []
    for name, path in list(S["asked"].items())[:MAX_UNLOADED]:
        if name in loaded:
            continue
        try:
            origin = _attr(finder.find_spec(name, path), "origin")
        except BaseException:
            continue
        if type(origin) is str and origin not in out:
            out.append(origin)
    return out


def _looked_in(S):
    """Where each module a ModuleNotFoundError named was looked for (its parent package's
    directories, else ``sys.path``): creating it there changes the verdict."""
    out = []
    for name in sorted(S["not_found"]):
        parent = name.rpartition(".")[0]
        path = _attr(sys.modules.get(parent), "__path__") if parent else None
        try:
            entries = list(sys.path if path is None else path)
        except BaseException:
            continue
        out.extend(p for p in entries if type(p) is str and p not in out)
    return out


# -- two live interpreters at once (the probe child's ``pair`` op) ---------------------------
# The child runs these in two isolated interpreters, each from its own thread; names and
# paths arrive as shared strings bound in ``__main__`` (NUL-separated lists).


def _pair_import(names, files, sys_path, crumbs, out):
    """Load each extension module from its file (its package's code is not what is
    checked, and may be slow to import twice), else by name; [name, error or None]."""
    import importlib
    import importlib.util
    import os

    sys.path[:] = sys_path.split("\0")
    report = []
    for name, file in zip(names.split("\0"), files.split("\0"), strict=True):
        _note(os, crumbs, "+" + name + "\t" + file)
        error = None
        try:
            _load_file(importlib.util, name, file)
        except BaseException:
            sys.modules.pop(name, None)
            try:
                importlib.import_module(name)
            except BaseException as exc:
                error = "%s: %s" % (type(exc).__name__, _text(exc))
        report.append([name, error])
        _note(os, crumbs, "-" + name)
    _emit(os, out, report)


def _load_file(util, name, file):
    if name in sys.modules:
        return
    spec = util.spec_from_file_location(name, file)
    module = util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def _pair_touch(names, crumbs, out):
    """Read every module attribute of each extension (the other interpreter does the same
    at the same time): [name, error or None, [[attribute, id], ...]] for the values that
    are not immortal, so an id seen in both interpreters is one object shared by both."""
    import os

    immortal = getattr(sys, "_is_immortal", None) or _huge_refcount
    report = []
    for name in names.split("\0"):
        module = sys.modules.get(name)
        if module is None:
            continue
        _note(os, crumbs, "+" + name + "\t")
        values, error = [], None
        try:
            for attr, value in list(vars(module).items()):
                if type(attr) is str and not immortal(value):
                    values.append([attr, id(value)])
        except BaseException as exc:
            error = "%s: %s" % (type(exc).__name__, _text(exc))
        _note(os, crumbs, "-" + name)
        report.append([name, error, values])
    _emit(os, out, report)


def _huge_refcount(value):
    """3.13 has no ``sys._is_immortal``: an immortal object's refcount is near 2**32."""
    return sys.getrefcount(value) >= 1 << 30
