"""``python -m tatonnet ...``: the command line (see :mod:`tatonnet.cli.run`)."""

from tatonnet.cli.run import entry

entry()
