import sc_segv


def job():
    return sc_segv.answer()
