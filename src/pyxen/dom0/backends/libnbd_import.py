"""libnbd's Python binding (Debian python3-libnbd) for pyxen's venv.

Debian installs the binding into the system Python's dist-packages (nbd.py
and the extension libnbdmod.cpython-311-*.so), which a venv does not see. This
loads exactly those two modules from there, and nothing else of
dist-packages; the venv's Python must be a CPython of the same minor version
(3.11: the extension's ABI tag says so, and the import fails otherwise)."""
from __future__ import annotations

import glob
import importlib.machinery
import importlib.util
import sys

DIST = "/usr/lib/python3/dist-packages"


def load():
    """The `nbd` module; ImportError when python3-libnbd is not installed
    (or built for another Python)."""
    mod = sys.modules.get("nbd")
    if mod is not None and hasattr(mod, "NBD"):
        return mod
    try:
        import libnbdmod  # noqa: F401   (already importable: a system Python)
    except ImportError:
        tag = importlib.machinery.EXTENSION_SUFFIXES[0]     # .cpython-311-x86_64-linux-gnu.so
        found = glob.glob(f"{DIST}/libnbdmod{tag}")
        if not found:
            raise ImportError(f"libnbd's Python binding (Debian python3-libnbd) for this Python "
                              f"is not installed (no {DIST}/libnbdmod{tag})") from None
        spec = importlib.util.spec_from_file_location("libnbdmod", found[0])
        ext = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(ext)
        sys.modules["libnbdmod"] = ext
    spec = importlib.util.spec_from_file_location("nbd", f"{DIST}/nbd.py")
    if spec is None:
        raise ImportError(f"{DIST}/nbd.py missing (Debian python3-libnbd)")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["nbd"] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules["nbd"]
        raise
    return mod
