"""Compatible: stdlib and pure-Python/compatible extensions only."""

import json
import sqlite3

import attrs


@attrs.define
class Line:
    sku: str
    qty: int


def daily_report(rows: list[dict]) -> str:
    lines = [Line(**r) for r in rows]
    db = sqlite3.connect(":memory:")
    db.execute("create table t (sku text, qty int)")
    db.executemany("insert into t values (?, ?)", [(x.sku, x.qty) for x in lines])
    return json.dumps(db.execute("select sku, sum(qty) from t group by sku").fetchall())
