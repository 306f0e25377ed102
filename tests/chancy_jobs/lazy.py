def job():
    import sc_multi_nogil

    return sc_multi_nogil.answer()
