"""Two jobs in one module: only the one whose body imports a single-phase extension
needs a process; routing is per job function."""


def light():
    return 1


def heavy():
    import sc_single

    return sc_single.answer()
