"""Puts the SDK (wsgate.py, wsgate_testing.py) on the path, so the tests run
from any directory without PYTHONPATH."""

import os
import sys

SDK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if SDK not in sys.path:
    sys.path.insert(0, SDK)
