"""Degraded: msgpack catches the ImportError of its C accelerator in a
sub-interpreter and silently falls back to pure Python."""

import msgpack


def pack(payload: dict) -> bytes:
    return msgpack.packb(payload)
