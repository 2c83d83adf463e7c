"""The command line: ``tatonnet`` (also ``python -m tatonnet`` and ``python run.py``) and its subcommands."""
