"""Where pyxend keeps its sockets and state."""
from __future__ import annotations

import os
from pathlib import Path


def run_dir() -> Path:
    """$PYXEN_RUN_DIR, else /run/pyxen for root, else $XDG_RUNTIME_DIR/pyxen
    (or /tmp/pyxen-UID)."""
    env = os.environ.get("PYXEN_RUN_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/run/pyxen")
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "pyxen"
    return Path(f"/tmp/pyxen-{os.geteuid()}")


def api_socket(rd: Path) -> Path:
    return rd / "pyxend.sock"


def xenstored_socket(rd: Path) -> Path:
    return rd / "xenstored.sock"


def domains_dir(rd: Path) -> Path:
    return rd / "domains"


def domain_socket(rd: Path, domid: int) -> Path:
    return domains_dir(rd) / f"{domid}.sock"


def domain_record(rd: Path, domid: int) -> Path:
    return domains_dir(rd) / f"{domid}.json"


def domain_result(rd: Path, domid: int) -> Path:
    return domains_dir(rd) / f"{domid}.result"


def log_dir(rd: Path) -> Path:
    env = os.environ.get("PYXEN_LOG_DIR")
    return Path(env) if env else rd / "log"


def dump_dir(rd: Path) -> Path:
    """Where core dumps go (on_crash="coredump-*"): beside the log directory."""
    return log_dir(rd).parent / "dump"


def safe_file(directory: Path, filename: str) -> Path:
    """directory/filename, refusing a filename that is not a single path
    component (a name that would lead out of the directory)."""
    if not filename or "/" in filename or "\0" in filename or filename in (".", ".."):
        raise ValueError(f"{filename!r} cannot be a file name in {directory}")
    return Path(directory) / filename
