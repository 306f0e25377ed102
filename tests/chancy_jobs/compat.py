import json

import sc_multi_ok


def job():
    return json.dumps(sc_multi_ok.answer())
