"""pyxen's xenstored: the Xen store daemon re-implemented in Python.

Modules:

* :mod:`.store`    -- :class:`~.store.XenStore`: every operation's
                      semantics, on the parts below; no I/O.
* :mod:`.core`     -- the node tree, paths, permissions, connections.
* :mod:`.transactions` -- open / commit, nodes seen through a transaction.
* :mod:`.watches`  -- watch registration and events.
* :mod:`.domains`  -- introduced domains, quotas, memory accounting.
* :mod:`.persist`  -- the state on disk: a JSON snapshot plus an
                      append-only log (group commit, compaction).
* :mod:`.protocol` -- the xs_wire message format and a per-client
                      :class:`~.protocol.Connection` (bytes in, bytes out).
* :mod:`.ring`     -- :class:`~.ring.RingTransport`, one guest's shared
                      xenstore ring page.
* :mod:`.server`   -- :class:`~.server.XenStoreServer` (Unix socket + rings,
                      served in turn by one thread) and the
                      ``pyxen-xenstored`` entry point.
"""
from __future__ import annotations

from .store import (
    ERRORS,
    Perm,
    XenStore,
    XenStoreError,
    Client,
    format_perm,
    parse_perm,
)

__all__ = [
    "ERRORS",
    "Perm",
    "XenStore",
    "XenStoreError",
    "Client",
    "format_perm",
    "parse_perm",
]
