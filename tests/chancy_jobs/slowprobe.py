import json


def job(n: int = 0):
    return json.dumps(n)
