"""``python -m tatonnet ...``: the command line (see :mod:`tatonnet.cli.run`)."""

import sys

from tatonnet.cli.run import main

sys.exit(main())
