"""``subcompat cache export`` / ``import``: job verdicts as JSON, with their fingerprints.

For fleets that compute verdicts ahead (in CI, or in the deploy image) and ship them. The
file is a ``check --format json`` report (schema 1: the executor's ``verdicts`` option reads
it as it is) whose entries also carry their cache keys (``interp``: the interpreter build,
``env``: the environment) and ``stamps``: [path, size, mtime_ns, content hash] of every
file the verdict depends on. Whoever reads an entry checks the stamps against its own
files, so an entry made elsewhere is used only where the files are the same.

Import writes rows under their own keys, never over a verdict already there (one probed
here wins). JSON only; the file is bounded before it is parsed.
"""

from __future__ import annotations

import json

from subcompat import __version__
from subcompat._bounded import Refused, read_regular
from subcompat.verdict import Verdict

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

MAX_BYTES = 64 << 20
KEYS = ("interp", "env")


class TransferError(Exception):
    """The file cannot be imported; the message is one line."""


def export(rows: list[tuple[str, str, str, str, str]]) -> dict[str, Any]:
    """Cache rows (interp, env, target, verdict JSON, stamps JSON) as one document; rows
    that do not decode are left out."""
    modules = []
    for interp, env, target, verdict_text, stamps_text in rows:
        try:
            entry = Verdict.from_json(json.loads(verdict_text)).to_json()
            stamps = json.loads(stamps_text)
        except Exception:
            continue
        if entry["target"] != target or not isinstance(stamps, list):
            continue
        modules.append({**entry, "cached": True, "interp": interp, "env": env, "stamps": stamps})
    return {"schema": 1, "tool": f"subcompat {__version__}", "kind": "verdicts", "modules": modules}


def read(path: str) -> tuple[list[tuple[str, str, str, str, str]], int]:
    """The rows an exported file holds, and how many entries could not be used."""
    data = _load(path)
    if not isinstance(data, dict) or data.get("schema") != 1 or not isinstance(data.get("modules"), list):
        raise TransferError(f"{path}: not a subcompat verdicts file (schema 1 with a 'modules' list)")
    rows, skipped = [], 0
    for entry in data["modules"]:
        row = _row(entry)
        if row is None:
            skipped += 1
        else:
            rows.append(row)
    return rows, skipped


def _load(path: str) -> Any:
    try:
        raw, _ = read_regular(path, MAX_BYTES)
    except Refused as exc:
        raise TransferError(f"{path}: {exc}") from None
    except OSError as exc:
        raise TransferError(f"{path}: {exc.strerror or exc}") from None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise TransferError(f"{path}: not JSON ({' '.join(str(exc).split())[:120]})") from None


def _row(entry: Any) -> tuple[str, str, str, str, str] | None:
    """A cache row from one entry, or None: a report entry without keys and stamps (from
    ``check --format json``) cannot be keyed; the executor's ``verdicts`` option reads those."""
    if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in KEYS):
        return None
    stamps = entry.get("stamps")
    if not isinstance(stamps, list) or not all(isinstance(s, list) and len(s) == 4 for s in stamps):
        return None
    try:
        verdict = Verdict.from_json(entry)
        text = json.dumps({**verdict.to_json(), "cached": False})
    except Exception:
        return None
    return entry["interp"], entry["env"], verdict.target, text, json.dumps(stamps)
