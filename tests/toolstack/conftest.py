"""Make the src/ layout importable when pyxen is not installed."""

import os
import sys

try:
    import pyxen  # noqa: F401
except ImportError:  # pragma: no cover - depends on how tests are run
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))
