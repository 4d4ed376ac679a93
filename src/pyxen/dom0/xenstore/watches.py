"""Watches, as C xenstored's xenstored_watch.c: registration per
connection, and firing.

A watch fires once when registered, then for every change of its path or
any descendant (creation, value, permissions, removal).  Removing an
ancestor fires the watch with the watched path itself.  Relative watch
paths report relative event paths.  Changes in a transaction fire at
commit, one event per node (C xenstored's accessed-node list).
@introduceDomain / @releaseDomain fire on INTRODUCE and on RELEASE / domain
shutdown; unprivileged watchers receive them only if the special node's
permissions let them read it.

A guest's ring outlives a restart of the daemon, so the watches of ring
connections (``client.persist_watches``) are journalled (``W+`` / ``W-`` /
``W0`` records) and kept in the state; loaded ones wait in
:attr:`WatchTable.saved` until the guest's ring is attached again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional

from .core import PERM_READ, Client, Tree, is_child, levels_below

if TYPE_CHECKING:
    from .transactions import Transaction

__all__ = ["Watch", "WatchTable"]


@dataclass(eq=False)
class Watch:
    path: str               # canonical: absolute path or @special
    token: str
    relative: bool = False  # registered with a relative path
    prefix_len: int = 0     # chars to strip from event paths when relative
    depth: Optional[int] = None

    def event_path(self, name: str) -> str:
        return name[self.prefix_len:] if self.relative else name

    def record(self) -> list:
        """The form kept in a state file."""
        return [self.path, self.token, self.relative, self.prefix_len, self.depth]


class WatchTable:
    """The watches of all connections (``clients``: the store's list of
    connections, each holding its own watches) and the firing of events.

    ``perm_for(client, perms)`` gives a client's access to a node (watchers
    only hear of nodes they can read); ``record(rec)`` journals a record."""

    def __init__(self, tree: Tree, clients: list[Client],
                 perm_for: Callable[[Client, tuple], int],
                 record: Callable[[tuple], None]):
        self.tree = tree
        self.clients = clients
        self._perm_for = perm_for
        self._record = record
        #: guests' watches loaded from a state, until their ring comes back
        self.saved: dict[int, list[Watch]] = {}

    # ------------------------------------------------------ registration

    @staticmethod
    def find(client: Client, name: str, token: str) -> Optional[int]:
        for i, w in enumerate(client.watches):
            if w.path == name and w.token == token:
                return i
        return None

    def add(self, client: Client, w: Watch) -> None:
        """Register ``w`` (checked by the caller) and fire it once."""
        client.watches.append(w)
        client.watch_mem += len(w.path) + len(w.token)
        if client.persist_watches:
            self._record(("W+", client.domid, w.path, w.token, w.relative,
                          w.prefix_len, w.depth))
        client.emit(w.event_path(w.path), w.token)

    def remove(self, client: Client, index: int) -> None:
        w = client.watches.pop(index)
        client.watch_mem -= len(w.path) + len(w.token)
        if client.persist_watches:
            self._record(("W-", client.domid, w.path, w.token))

    def clear(self, client: Client) -> None:
        """Drop all the client's watches (journalled for a guest's ring)."""
        if client.persist_watches and client.watches:
            self._record(("W0", client.domid))
        client.watches.clear()
        client.watch_mem = 0

    # ------------------------------------------------------------ firing

    def fire(self, tx: Optional["Transaction"], name: str, exact: bool,
             perm_sets: tuple) -> None:
        """A node changed: ``exact`` fires only watches of ``name`` itself
        (a node removed with an ancestor); ``perm_sets``: the permission
        lists a watcher may read the node by.  In a transaction the event
        waits for the commit (:meth:`fire_transaction`)."""
        if tx is None:
            self.deliver(name, exact, perm_sets)
            return
        # one event per node, as C xenstored's accessed-node list: a
        # non-exact firing replaces an exact one, never the other way
        # round; readers are judged by the permissions the node had when
        # first changed and by the last ones
        ev = tx.events.get(name)
        if ev is None:
            tx.events[name] = [exact, perm_sets, perm_sets]
        else:
            ev[0] = ev[0] and exact
            ev[2] = perm_sets

    def fire_transaction(self, tx: "Transaction") -> None:
        for name, (exact, first, last) in tx.events.items():
            self.deliver(name, exact, first if first is last else first + last)

    def deliver(self, name: str, exact: bool, perm_sets: tuple) -> None:
        perm_for = self._perm_for
        for c in list(self.clients):
            if not c.watches:
                continue
            if not c.privileged and not any(
                    p is not None and perm_for(c, p) & PERM_READ
                    for p in perm_sets):
                continue
            for w in list(c.watches):
                if exact:
                    hit = name == w.path
                else:
                    hit = is_child(name, w.path) and (
                        w.depth is None or levels_below(name, w.path) <= w.depth)
                if hit:
                    c.emit(w.event_path(name), w.token)

    def fire_special(self, name: str, domid: int) -> None:
        """@introduceDomain / @releaseDomain for ``domid``."""
        node = self.tree.special[name]
        specific = f"{name}/{domid}"
        for c in list(self.clients):
            if not c.watches or not self._perm_for(c, node.perms) & PERM_READ:
                continue
            for w in list(c.watches):
                if w.path == name:
                    c.emit(specific if w.depth == 1 else name, w.token)
                elif w.path == specific:
                    c.emit(specific, w.token)

    # -------------------------------------------------- across restarts

    def forget_saved(self, domid: int) -> None:
        """The domain is gone: its saved watches too."""
        if self.saved.pop(domid, None):
            self._record(("W0", domid))

    def apply_record(self, rec) -> None:
        """Replay a ``W+`` / ``W-`` / ``W0`` journal record."""
        op = rec[0]
        if op == "W+":
            _, domid, path, token, relative, prefix_len, depth = rec
            ws = self.saved.setdefault(domid, [])
            if not any(w.path == path and w.token == token for w in ws):
                ws.append(Watch(path, token, bool(relative), int(prefix_len), depth))
        elif op == "W-":
            _, domid, path, token = rec
            ws = self.saved.get(domid, [])
            ws[:] = [w for w in ws if not (w.path == path and w.token == token)]
        elif op == "W0":
            self.saved.pop(rec[1], None)
        else:
            raise ValueError(f"unknown journal record {op!r}")

    def state(self) -> dict:
        """Guests' watches to keep across a restart of the daemon: those of
        live ring connections and those loaded but not yet taken back."""
        out = {d: [w.record() for w in ws] for d, ws in self.saved.items() if ws}
        for c in self.clients:
            if c.persist_watches and c.watches:
                out[c.domid] = [w.record() for w in c.watches]
        return {str(d): ws for d, ws in out.items()}

    def load_state(self, ring_watches: dict) -> None:
        self.saved = {
            int(d): [Watch(p, t, bool(r), int(pl), dp) for p, t, r, pl, dp in ws]
            for d, ws in ring_watches.items()}

    def check(self) -> list[str]:
        problems = []
        for c in self.clients:
            if c.watch_mem != sum(len(w.path) + len(w.token) for w in c.watches):
                problems.append(f"{c!r}: watch memory {c.watch_mem} is wrong")
        return problems
