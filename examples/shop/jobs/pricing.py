"""Incompatible only when the job runs: the import is deferred to the function body,
so `import shop.jobs.pricing` alone would pass in a sub-interpreter."""


def quote(sku: str, qty: int) -> str:
    import ujson  # a single-phase extension, loaded lazily

    return ujson.dumps({"sku": sku, "total": qty * 9.5})
