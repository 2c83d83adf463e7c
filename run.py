#!/usr/bin/env python
"""``python run.py ...`` is ``tatonnet ...``: the command line of :mod:`tatonnet.cli.run`."""

from tatonnet.cli.run import entry

if __name__ == "__main__":
    entry()
