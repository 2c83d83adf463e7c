"""Shared test configuration.

Hypothesis runs derandomized by default (profile ``repeatable``): every run of the suite
draws the same examples, so CI results do not depend on luck. To search new examples, run
``HYPOTHESIS_PROFILE=explore .venv/bin/python -m pytest``.
"""

import os

import pytest
from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture(scope="module")
def local_ray():
    """A plain local Ray of 4 CPUs for one test module (explicit CPUs, small store)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=4, object_store_memory=200 * 2**20, include_dashboard=False,
                 logging_level="WARNING")  # fmt: skip
    yield ray
    ray.shutdown()
