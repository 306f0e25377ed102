import ujson


def job():
    return ujson.dumps({"a": 1})
