raise RuntimeError("this job module is broken everywhere")


def job():
    return 1
