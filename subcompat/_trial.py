"""Runs inside one fresh sub-interpreter: import one candidate and report what happened.

The probe child executes this file's source in a new interpreter with ``PARAMS`` bound.
Stdlib only, and nothing imported before the candidate that the candidate might need
to import itself: the interpreter must stay as fresh as the job will find it.

Two hooks make the report exact:
- a ``sys.meta_path`` tracer records who imported each module (file and line);
- ``ExtensionFileLoader`` is wrapped so that every extension load is recorded, with
  its dotted name and file, even when the package catches the ImportError and falls
  back (degraded) or re-raises its own message (numpy-style wrapping). A breadcrumb
  file names the extension being loaded if this process dies or hangs.
"""

import sys


def _trial(P):
    import os

    sys.path[:] = P["sys_path"]
    import importlib
    import importlib.machinery as machinery
    import importlib.util
    import traceback  # before the snapshot: needed to describe failures

    crumb_path = P["breadcrumb"]

    def crumb(text):
        fd = os.open(crumb_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (text + "\n").encode("utf-8", "replace"))
        finally:
            os.close(fd)

    loader_cls = machinery.ExtensionFileLoader
    orig_create = loader_cls.create_module
    orig_exec = loader_cls.exec_module
    loads = []  # every extension load attempt, in order
    failures = []

    def record_failure(spec, phase, exc):
        failures.append(
            {
                "name": spec.name,
                "file": spec.origin,
                "phase": phase,
                "type": type(exc).__name__,
                "msg": str(exc),
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
        loads.append(spec.name)
        return guarded("create", spec, lambda: orig_create(self, spec))

    def exec_module(self, module):
        return guarded("exec", module.__spec__, lambda: orig_exec(self, module))

    loader_cls.create_module = create_module
    loader_cls.exec_module = exec_module

    edges = {}

    class Tracer:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name in edges:
                return None
            frame = caller(2)
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
            return None

    def describe(exc):
        chain = []
        seen = set()
        cur = exc
        while cur is not None and id(cur) not in seen and len(chain) < 16:
            seen.add(id(cur))
            chain.append({"type": type(cur).__name__, "msg": str(cur)})
            cur = cur.__cause__ or cur.__context__
        return {
            "type": type(exc).__name__,
            "msg": str(exc),
            "chain": chain,
            "traceback": "".join(traceback.format_exception(exc))[-4000:],
        }

    def import_one(name, fromlist, function=None):
        if fromlist:  # exactly what `from name import a, b` does
            module = __import__(name, fromlist=fromlist)
            for attr in fromlist:
                if not hasattr(module, attr):
                    raise ImportError(f"cannot import name {attr!r} from {name!r}")
        else:
            module = importlib.import_module(name)
        if function and not callable(getattr(module, function, None)):
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
    lazy_results = []
    main_failures = []
    leftover = []  # lazy candidates not tried here because one failed first
    tool_modules = set()
    try:
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

        main_failures = list(failures)  # lazy imports below carry their own
        if error is None and mode in ("job", "lazy") and P.get("lazy", True):
            pre_tool = set(sys.modules)
            spec = importlib.util.spec_from_file_location("_subcompat_discover", P["discover"])
            disc = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = disc
            spec.loader.exec_module(disc)
            tool_modules = set(sys.modules) - pre_tool
            locator = disc.Locator()
            scanned = set()
            seen_lazy = set()
            queue = [tuple(x) for x in P.get("pending") or ()]
            skip = set(P.get("skip") or ())

            def scan(extra_sources=()):
                sources = list(extra_sources)
                for mod_name in list(sys.modules):
                    mod = sys.modules.get(mod_name)
                    file = getattr(mod, "__file__", None)
                    if mod_name in before or mod_name in tool_modules:
                        continue
                    if not file or not file.endswith(".py") or locator.origin(file) != "first_party":
                        continue
                    sources.append((mod_name, file, file.endswith("__init__.py"), False))
                for mod_name, file, is_pkg, all_imports in sources:
                    if file in scanned:
                        continue
                    scanned.add(file)
                    for lz in disc.scan_lazy_imports(
                        mod_name, file, is_package=is_pkg, all_imports=all_imports
                    ):
                        key = (lz.module, lz.fromlist)
                        if key not in seen_lazy:
                            seen_lazy.add(key)
                            queue.append(
                                (
                                    lz.module,
                                    list(lz.fromlist),
                                    lz.edge.importer,
                                    lz.edge.file,
                                    lz.edge.line,
                                    lz.edge.how,
                                )
                            )

            scan(P.get("sources") or ())
            while queue:
                lz_name, fromlist, importer, file, line, how = queue.pop(0)
                mod = sys.modules.get(lz_name)
                if mod is not None and all(hasattr(mod, a) for a in fromlist):
                    continue
                if lz_name in skip:  # it already crashed or hung a probe: never again
                    continue
                for target in (lz_name, *(lz_name + "." + a for a in fromlist)):
                    edges.setdefault(target, [importer, file, line, how])
                entry = {"module": lz_name, "fromlist": list(fromlist), "edge": [importer, file, line, how]}
                n_fail = len(failures)
                crumb("*" + lz_name)
                try:
                    import_one(lz_name, fromlist)
                except BaseException as exc:
                    entry["error"] = describe(exc)
                    entry["failures"] = failures[n_fail:]
                    entry["missing"] = missing_only(exc, lz_name) and len(failures) == n_fail
                    lazy_results.append(entry)
                    if entry["missing"]:
                        continue
                    # never retry in an interpreter where an import failed: the rest
                    # goes to a fresh interpreter
                    leftover = [list(q) for q in queue]
                    break
                entry["failures"] = failures[n_fail:]  # swallowed ones: degraded
                lazy_results.append(entry)
                scan()
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if f is not Tracer]
        loader_cls.create_module = orig_create
        loader_cls.exec_module = orig_exec

    modules = []
    for mod_name in sorted(set(sys.modules) - before - tool_modules):
        mod = sys.modules.get(mod_name)
        spec = getattr(mod, "__spec__", None)
        file = getattr(mod, "__file__", None) or getattr(spec, "origin", None)
        if file in ("built-in", "frozen"):
            file = None
        is_ext = isinstance(getattr(spec, "loader", None), loader_cls) or bool(
            file and file.endswith(tuple(machinery.EXTENSION_SUFFIXES))
        )
        modules.append([mod_name, file, is_ext])
    result = {
        "error": error,
        "modules": modules,
        "edges": {k: v for k, v in edges.items() if k not in tool_modules},
        "loads": loads,
        "failures": main_failures,
        "lazy": lazy_results,
        "baseline": baseline,
        "preload_error": preload_error,
        "pending": leftover,
    }
    import json

    with open(P["result"], "w", encoding="utf-8") as fh:
        json.dump(result, fh)


_trial(PARAMS)  # noqa: F821 - bound by the probe child
