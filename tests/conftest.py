"""pytest configuration for the test-suite: hypothesis profiles and the shared-data fixture.

Profiles: "fastllm" (default; modest example counts so the suite stays well under 5 minutes on 2
cores) and "thorough" (HYPOTHESIS_PROFILE=thorough, 10x the examples, for a nightly run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from shared_data import SHARED_REASON, shared_data_dir

settings.register_profile(
    "fastllm",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("fastllm"), max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fastllm"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(SHARED_REASON)
    return path
