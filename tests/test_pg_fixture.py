"""The throwaway PostgreSQL cluster the chancy tests run against."""

from __future__ import annotations

import asyncio
import sys

import pytest
from _req import require_or_skip


def test_cluster_answers_and_chancy_migrates(pg_dsn):
    try:
        import psycopg
    except ImportError:
        psycopg = None
    require_or_skip(psycopg is not None, "psycopg is not installed")
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    if sys.version_info < (3, 13):
        pytest.skip("chancy's sub-interpreter extra is only installed on 3.13+")
    try:
        from chancy import Chancy
    except ImportError:
        Chancy = None
    require_or_skip(Chancy is not None, "chancy is not installed")

    async def migrate() -> int:
        async with Chancy(pg_dsn) as chancy:
            await chancy.migrate()
            async with chancy.pool.connection() as conn:
                cur = await conn.execute(
                    "select count(*) from information_schema.tables where table_name like 'chancy_%'"
                )
                return (await cur.fetchone())[0]

    assert asyncio.run(migrate()) >= 2
