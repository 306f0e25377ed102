import sc_softpkg


def job():
    # the C path: only there when the accelerator loaded (like yaml.CSafeLoader)
    return sc_softpkg.CFast.answer()
