import sc_single


def job():
    return sc_single.answer()
