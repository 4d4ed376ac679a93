import sys
from pathlib import Path

# Let the tests run from a plain checkout (no `pip install -e .`).
_SRC = Path(__file__).resolve().parents[2] / "src"
try:
    import pyxen.build  # noqa: F401
except ImportError:
    sys.path.insert(0, str(_SRC))
