import sys

from subcompat.cli import main

sys.exit(main())
