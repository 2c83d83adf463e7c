"""Shared test configuration.

Hypothesis runs derandomized by default (profile ``repeatable``): every run of the suite
draws the same examples, so CI results do not depend on luck. To search new examples, run
``HYPOTHESIS_PROFILE=explore .venv/bin/python -m pytest``.
"""

import os

from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))
