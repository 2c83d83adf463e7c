#!/usr/bin/env python
"""``python run.py ...`` is ``tatonnet ...``: the command line of :mod:`tatonnet.cli.run`."""

import sys

from tatonnet.cli.run import main

if __name__ == "__main__":
    sys.exit(main())
