"""The xenstored state file: the whole tree (values and permissions) as
JSON, replaced atomically (temporary file, fsync, rename, fsync of the
directory) so a crash leaves either the old or the new state, never a
torn one."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional, Union

from .store import XenStore

__all__ = ["save_state", "load_state", "load_or_create"]

PathLike = Union[str, os.PathLike]


def save_state(store: XenStore, path: PathLike) -> None:
    """Write ``store`` to ``path`` atomically and clear ``store.dirty``."""
    path = Path(path)
    data = json.dumps(store.to_state(), separators=(",", ":")).encode()
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        pass
    else:
        try:
            os.fsync(dfd)
        except OSError:
            pass
        finally:
            os.close(dfd)
    store.dirty = False


def load_state(path: PathLike, quotas: Optional[dict] = None) -> XenStore:
    """Read a state file written by :func:`save_state`."""
    with open(path, "rb") as f:
        state = json.loads(f.read())
    return XenStore.from_state(state, quotas)


def load_or_create(path: Optional[PathLike], quotas: Optional[dict] = None) -> XenStore:
    """The stored state if ``path`` exists, else a fresh store."""
    if path is not None and os.path.exists(path):
        return load_state(path, quotas)
    return XenStore(quotas)
