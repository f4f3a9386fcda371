import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests import their shared specs as `specs`

from nlc.testing.settings import load_profile  # noqa: E402

# Hypothesis profiles (nlc/testing/settings.py): `ci` (the default) keeps the suite fast; `thorough`
# is for a long local run, `dev` for a quick one: NLC_HYPOTHESIS_PROFILE=thorough pytest tests/test_robustness.py
load_profile()
