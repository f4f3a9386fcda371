import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).parent))  # tests import their shared specs as `specs`

# Hypothesis profiles: `ci` (the default) keeps the suite fast; `thorough` is for a long local
# run: NLC_HYPOTHESIS_PROFILE=thorough pytest tests/test_robustness.py
settings.register_profile("ci", max_examples=60, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=10, deadline=None)
settings.load_profile(os.environ.get("NLC_HYPOTHESIS_PROFILE", "ci"))
