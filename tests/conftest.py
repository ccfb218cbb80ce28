"""pytest configuration for the test-suite: hypothesis profiles.

Profiles: "fastllm" (default; modest example counts so the suite stays well under 5 minutes on 2
cores) and "thorough" (HYPOTHESIS_PROFILE=thorough, 10x the examples, for a nightly run).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fastllm",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("fastllm"), max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fastllm"))
