"""pytest-benchmark suites live here (``test_speed.py``); the scripts import ``_common`` from this folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
