"""``python -m subcompat``: runpy put the current directory first on ``sys.path``; in a
project whose root holds a ``json.py`` or ``types.py`` that would shadow the stdlib the
CLI imports. The package is imported already (its submodules come from its own
``__path__``), so that entry is replaced by the package's own parent directory."""

import os
import sys

if sys.path and sys.path[0] in ("", os.getcwd()):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from subcompat.cli import main  # noqa: E402 - after the path is made safe

sys.exit(main())
