"""The xenstore data model: a tree of nodes and the semantics of every
operation of the xenstore protocol.  No I/O happens here.

A node has a value (bytes), an ordered list of child names, a permission
list and a generation count.  Permissions are ``(char, domid)`` pairs with
the char one of ``n`` (none), ``r`` (read), ``w`` (write), ``b`` (both): the
first pair names the owner (who can always read, write and change the
permissions) and gives the access of every domain not listed afterwards.

Callers talk to the store through :class:`Client` objects (one per
connection: a tool socket or a guest ring).  Every operation takes the
client first; failures raise :class:`XenStoreError` whose ``name`` is the
errno name sent on the wire (``ENOENT``, ``EACCES``...).  Watch events are
handed to the client's ``sink(path, token)`` callable as they fire; the
store never waits for anybody.

Rules followed (from Xen's docs/misc/xenstore.txt and tools/xenstored):

* dom0 (and any client created privileged) may do anything.  A domain is
  granted full access on nodes it owns, or whose owner is its target
  (SET_TARGET); otherwise the first permission entry naming it (or its
  target) applies, else the owner entry's access char.
* A node that does not exist reports ENOENT only when the nearest existing
  ancestor grants the requested access, EACCES otherwise (so unreadable
  subtrees do not leak their shape).
* WRITE and MKDIR create missing parents; new nodes copy the parent's
  permissions, with an unprivileged creator becoming the owner.
* RM removes a whole subtree; removing a missing node is fine when its
  parent exists.
* A watch fires once when registered, then for every change of its path or
  any descendant (creation, value, permissions, removal).  Removing an
  ancestor fires the watch with the watched path itself.  Relative watch
  paths report relative event paths.  Changes in a transaction fire at
  commit.  @introduceDomain / @releaseDomain fire on INTRODUCE and on
  RELEASE / domain shutdown; unprivileged watchers receive them only if the
  special node's permissions let them read it.
* Transactions are optimistic: every node read or written in a transaction
  is remembered with its generation; the commit fails with EAGAIN if any of
  them changed meanwhile.  As in Xen's C xenstored, a transaction keeps the
  node as it first saw it (or its absence): changes made outside after that
  do not show inside the transaction (they make its commit fail instead).
* Quotas (per domain, only for unprivileged clients, as in Xen): nodes
  owned, node size, permissions per node, path length, watches,
  transactions, nodes touched per transaction.  Outstanding requests are
  limited by the transports.  Privileged clients have generous safety caps
  on watches and transactions so no client can grow memory without bound.
"""
from __future__ import annotations

import base64
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Optional

__all__ = [
    "ERRORS",
    "XenStoreError",
    "Perm",
    "parse_perm",
    "format_perm",
    "Watch",
    "Transaction",
    "Client",
    "Domain",
    "XenStore",
    "DEFAULT_QUOTAS",
    "QUOTA_DESCRIPTIONS",
    "PRIVILEGED_LIMITS",
    "PAYLOAD_MAX",
    "ABS_PATH_MAX",
    "REL_PATH_MAX",
    "DOMID_SELF",
    "DOMID_FIRST_RESERVED",
    "SPECIAL_PATHS",
    "INITIAL_PATHS",
]

log = logging.getLogger("pyxen.xenstored")

#: errno names a reply may carry, in xs_wire.h's xsd_errors order.
ERRORS = (
    "EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC",
    "EIO", "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN",
    "E2BIG", "EPERM",
)

PAYLOAD_MAX = 4096          # XENSTORE_PAYLOAD_MAX
ABS_PATH_MAX = 3072         # XENSTORE_ABS_PATH_MAX
REL_PATH_MAX = 2048         # XENSTORE_REL_PATH_MAX
DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0

SPECIAL_PATHS = ("@introduceDomain", "@releaseDomain")
#: nodes present in a fresh store (all owned by dom0, no access for others)
INITIAL_PATHS = ("/", "/local", "/local/domain", "/tool", "/tool/xenstored",
                 "/vm")

#: per-domain hard quotas (names as in Xen's xenstored), unprivileged only
DEFAULT_QUOTAS = {
    "nodes": 1000,
    "watches": 128,
    "transactions": 10,
    "outstanding": 20,
    "node-size": 2048,
    "node-permissions": 5,
    "path-max": REL_PATH_MAX,
    "transaction-nodes": 1024,
}
QUOTA_DESCRIPTIONS = {
    "nodes": "Nodes per domain",
    "watches": "Watches per domain",
    "transactions": "Active transactions per domain",
    "outstanding": "Outstanding requests per domain",
    "node-size": "Max. size of a node",
    "node-permissions": "Max. number of permissions per node",
    "path-max": "Max. length of a node path",
    "transaction-nodes": "Max. number of accessed nodes per transaction",
}
#: caps that also bind privileged clients (Xen has none; we want bounds)
PRIVILEGED_LIMITS = {
    "watches": 65536,
    "transactions": 4096,
    "transaction-nodes": 1 << 20,
}

PERM_READ = 1
PERM_WRITE = 2
PERM_OWNER = 4
_PERM_BITS = {"n": 0, "r": PERM_READ, "w": PERM_WRITE, "b": PERM_READ | PERM_WRITE}

_VALID_PATH = re.compile(r"[A-Za-z0-9\-/_@]+\Z")
_PERM_RE = re.compile(r"([nrwb])([0-9]{1,5})\Z")
_LOCAL_PREFIX = re.compile(r"/local/domain/[0-9]{1,5}/")

#: a permission entry: (access char, domid)
Perm = tuple[str, int]


class XenStoreError(Exception):
    """An operation failed; ``name`` is the errno name sent to the client."""

    def __init__(self, name: str, detail: str = ""):
        if name not in ERRORS:
            raise ValueError(f"not a xenstore error name: {name!r}")
        super().__init__(f"{name}: {detail}" if detail else name)
        self.name = name


def parse_perm(text: str) -> Perm:
    """``"r5"`` -> ``("r", 5)``; EINVAL for anything else."""
    m = _PERM_RE.match(text) if isinstance(text, str) else None
    if not m or int(m.group(2)) > 0xFFFF:
        raise XenStoreError("EINVAL", f"bad permission {text!r}")
    return (m.group(1), int(m.group(2)))


def format_perm(perm: Perm) -> str:
    return f"{perm[0]}{perm[1]}"


def _check_perm(p) -> Perm:
    if isinstance(p, str):
        return parse_perm(p)
    try:
        ch, domid = p
    except (TypeError, ValueError):
        raise XenStoreError("EINVAL", f"bad permission {p!r}") from None
    if ch not in _PERM_BITS or not isinstance(domid, int) or not 0 <= domid <= 0xFFFF:
        raise XenStoreError("EINVAL", f"bad permission {p!r}")
    return (ch, domid)


def _parent(path: str) -> str:
    i = path.rfind("/")
    return "/" if i <= 0 else path[:i]


def _basename(path: str) -> str:
    return path[path.rfind("/") + 1:]


def _join(parent: str, child: str) -> str:
    return "/" + child if parent == "/" else f"{parent}/{child}"


def _is_child(name: str, watched: str) -> bool:
    """Is ``name`` ``watched`` itself or below it?"""
    if name == watched:
        return True
    if name[0] == "@" or watched[0] == "@":
        return name.startswith(watched + "/")
    if watched == "/":
        return True
    return name.startswith(watched) and name[len(watched)] == "/"


def _levels_below(name: str, watched: str) -> int:
    if name == watched:
        return 0
    rest = name[len(watched):] if watched != "/" else name
    return rest.count("/")


class _Node:
    __slots__ = ("value", "perms", "children", "generation")

    def __init__(self, value: bytes, perms: tuple, children: list, generation: int = 0):
        self.value = value
        self.perms = perms
        self.children = children
        self.generation = generation

    def copy(self) -> "_Node":
        return _Node(self.value, self.perms, list(self.children), self.generation)

    def size(self) -> int:
        # accounted like Xen: header + perms + data + NUL-terminated children
        return (16 + 8 * len(self.perms) + len(self.value)
                + sum(len(c) + 1 for c in self.children))


_MISSING = object()


@dataclass(eq=False)
class Watch:
    path: str               # canonical: absolute path or @special
    token: str
    relative: bool = False  # registered with a relative path
    prefix_len: int = 0     # chars to strip from event paths when relative
    depth: Optional[int] = None

    def event_path(self, name: str) -> str:
        return name[self.prefix_len:] if self.relative else name


class Transaction:
    """An open transaction: private copies of modified nodes (``None`` for
    removed ones) over the live tree, plus what was read (as it was read)."""

    __slots__ = ("id", "client", "overlay", "seen", "accessed", "events", "delta")

    def __init__(self, tx_id: int, client: "Client"):
        self.id = tx_id
        self.client = client
        self.overlay: dict[str, Optional[_Node]] = {}
        # copies of unmodified nodes as first read (None: absent then); live
        # nodes change in place, so a reference would not do
        self.seen: dict[str, Optional[_Node]] = {}
        self.accessed: dict[str, Optional[int]] = {}   # path -> generation seen
        self.events: list[tuple] = []                   # queued watch firings
        self.delta: Counter = Counter()                 # node count per owner


class Client:
    """One connection's view of the store: its domain, privilege, watches and
    transactions.  ``sink(path, token)`` receives watch events."""

    def __init__(self, store: "XenStore", domid: int, privileged: bool,
                 sink: Optional[Callable[[str, str], None]] = None):
        self.store = store
        self.domid = domid
        self.privileged = privileged
        self.sink = sink
        self.watches: list[Watch] = []
        self.transactions: dict[int, Transaction] = {}
        self.next_tx_id = 1
        self.closed = False

    @property
    def implicit_path(self) -> str:
        return f"/local/domain/{self.domid}"

    def emit(self, path: str, token: str) -> None:
        if self.sink is not None and not self.closed:
            self.sink(path, token)

    def __repr__(self) -> str:
        kind = "priv" if self.privileged else "unpriv"
        return f"<xenstore Client dom{self.domid} {kind} watches={len(self.watches)}>"


@dataclass
class Domain:
    domid: int
    introduced: bool = False
    gfn: int = 0
    evtchn: int = 0
    shutdown: bool = False
    target: Optional[int] = None


class XenStore:
    """The store.  See the module docstring for the rules enforced."""

    def __init__(self, quotas: Optional[dict] = None, *, initial: bool = True):
        self.nodes: dict[str, _Node] = {}
        self.special: dict[str, _Node] = {
            name: _Node(b"", (("n", 0),), []) for name in SPECIAL_PATHS}
        self.generation = 0
        self.node_count: Counter = Counter()
        self.clients: list[Client] = []
        self.domains: dict[int, Domain] = {}
        self.quotas = dict(DEFAULT_QUOTAS)
        if quotas:
            for k, v in quotas.items():
                if k not in self.quotas:
                    raise ValueError(f"unknown quota {k!r}")
                self.quotas[k] = int(v)
        self.logging_enabled = True
        #: set on every committed change; persistence clears it
        self.dirty = False
        #: counts committed changes (for tests and persistence)
        self.change_count = 0
        #: hooks for the server: on_introduce(domid, gfn, evtchn, first),
        #: on_release(domid)
        self.on_introduce: Optional[Callable[[int, int, int, bool], None]] = None
        self.on_release: Optional[Callable[[int], None]] = None
        self.on_change: Optional[Callable[[], None]] = None
        if initial:
            for path in INITIAL_PATHS:
                self._load_node(path, b"", (("n", 0),))
            self.dirty = False

    # ----------------------------------------------------------- clients

    def new_client(self, domid: int = 0, privileged: Optional[bool] = None,
                   sink: Optional[Callable[[str, str], None]] = None) -> Client:
        if privileged is None:
            privileged = domid == 0
        c = Client(self, domid, privileged, sink)
        self.clients.append(c)
        return c

    def remove_client(self, client: Client) -> None:
        client.watches.clear()
        client.transactions.clear()
        client.closed = True
        try:
            self.clients.remove(client)
        except ValueError:
            pass

    # ------------------------------------------------------- internals

    def _changed(self) -> None:
        self.dirty = True
        self.change_count += 1
        if self.on_change is not None:
            self.on_change()

    def _limit(self, client: Client, name: str) -> int:
        if client.privileged:
            return PRIVILEGED_LIMITS.get(name, 1 << 62)
        return self.quotas[name]

    def _target_of(self, domid: int) -> Optional[int]:
        d = self.domains.get(domid)
        return d.target if d is not None else None

    def _perm_for(self, client: Client, perms: tuple) -> int:
        if client.privileged:
            return PERM_READ | PERM_WRITE | PERM_OWNER
        me = client.domid
        target = self._target_of(me)
        owner = perms[0][1]
        if owner == me or (target is not None and owner == target):
            return PERM_READ | PERM_WRITE | PERM_OWNER
        for ch, domid in perms[1:]:
            if domid == me or (target is not None and domid == target):
                return _PERM_BITS[ch]
        return _PERM_BITS[perms[0][0]]

    def _canon(self, client: Client, path, allow_special: bool = False) -> str:
        if not isinstance(path, str) or not path or not _VALID_PATH.match(path):
            raise XenStoreError("EINVAL", f"invalid path {path!r}")
        if path[0] == "@" and not allow_special:
            raise XenStoreError("EINVAL", f"special path not allowed here: {path}")
        name = path if path[0] in "/@" else f"{client.implicit_path}/{path}"
        if (name.endswith("/") and name != "/") or "//" in name:
            raise XenStoreError("EINVAL", f"invalid path {path!r}")
        if len(name) > ABS_PATH_MAX:
            raise XenStoreError("EINVAL", "path too long")
        if not client.privileged:
            m = _LOCAL_PREFIX.match(name)
            if len(name) - (m.end() if m else 0) > self.quotas["path-max"]:
                raise XenStoreError("EINVAL", "path too long")
        return name

    def _tx(self, client: Client, tx_id: int) -> Optional[Transaction]:
        if not tx_id:
            return None
        tx = client.transactions.get(tx_id)
        if tx is None:
            raise XenStoreError("ENOENT", f"no transaction {tx_id}")
        return tx

    def _access(self, tx: Transaction, path: str, node: Optional[_Node]) -> None:
        if path not in tx.accessed:
            if len(tx.accessed) >= self._limit(tx.client, "transaction-nodes"):
                raise XenStoreError("ENOSPC", "too many nodes in transaction")
            tx.accessed[path] = node.generation if node is not None else None

    def _get(self, tx: Optional[Transaction], path: str) -> Optional[_Node]:
        """Read a node through the transaction (recording the access).
        Inside a transaction a node keeps the state it had when the
        transaction first touched it, as in C xenstored (test-xenstore's
        "ta err" reads a node in a transaction after a write outside it and
        expects the old value)."""
        if tx is None:
            return self.nodes.get(path)
        n = tx.overlay.get(path, _MISSING)
        if n is not _MISSING:
            return n
        if tx.overlay and not self._visible_in_tx(tx, path):
            return None
        n = tx.seen.get(path, _MISSING)
        if n is not _MISSING:
            return n
        n = self.nodes.get(path)
        self._access(tx, path, n)
        if n is not None:
            n = n.copy()
        tx.seen[path] = n
        return n

    @staticmethod
    def _visible_in_tx(tx: Transaction, path: str) -> bool:
        """A live node is part of the transaction's view only if the
        nearest ancestor the transaction modified still lists it (when they
        disagree, something changed under the transaction, whose commit
        will fail with EAGAIN anyway)."""
        child = path
        while child != "/":
            p = _parent(child)
            o = tx.overlay.get(p, _MISSING)
            if o is not _MISSING:
                return o is not None and _basename(child) in o.children
            child = p
        return True

    def _peek(self, tx: Optional[Transaction], path: str) -> Optional[_Node]:
        """Like _get but not recorded (used for watch permission checks)."""
        if tx is not None:
            n = tx.overlay.get(path, _MISSING)
            if n is not _MISSING:
                return n
            if tx.overlay and not self._visible_in_tx(tx, path):
                return None
            n = tx.seen.get(path, _MISSING)
            if n is not _MISSING:
                return n
        return self.nodes.get(path)

    def _bump(self, node: _Node) -> None:
        self.generation += 1
        node.generation = self.generation

    def _writable(self, tx: Optional[Transaction], path: str) -> _Node:
        """An existing node, ready to be modified in place."""
        if tx is None:
            n = self.nodes[path]
            self._bump(n)
            self._changed()
            return n
        n = tx.overlay.get(path, _MISSING)
        if n is _MISSING:
            n = self._get(tx, path)
            if n is not None:
                tx.seen.pop(path, None)
                n = n.copy()
                tx.overlay[path] = n
        if n is None:
            # only a parent can be missing here: the transaction holds a
            # child it read before the parent went away outside (C
            # xenstored answers EINVAL too; the commit would fail anyway)
            raise XenStoreError("EINVAL", f"{path} is gone in this transaction")
        self._bump(n)
        return n

    def _insert(self, tx: Optional[Transaction], path: str, node: _Node) -> None:
        self._bump(node)
        if tx is None:
            self.nodes[path] = node
            self._changed()
        else:
            if path not in tx.overlay:
                self._access(tx, path, self.nodes.get(path))
            tx.overlay[path] = node

    def _delete(self, tx: Optional[Transaction], path: str) -> None:
        if tx is None:
            del self.nodes[path]
            self._changed()
        else:
            if path not in tx.overlay:
                self._access(tx, path, self.nodes.get(path))
            tx.overlay[path] = None

    def _count(self, tx: Optional[Transaction], domid: int) -> int:
        return self.node_count[domid] + (tx.delta[domid] if tx is not None else 0)

    def _count_add(self, tx: Optional[Transaction], domid: int, n: int) -> None:
        if tx is None:
            self.node_count[domid] += n
            if self.node_count[domid] == 0:
                del self.node_count[domid]
        else:
            tx.delta[domid] += n

    def _check_size(self, client: Client, node: _Node) -> None:
        if not client.privileged and node.size() > self.quotas["node-size"]:
            raise XenStoreError("ENOSPC", "node too big")

    def _lookup(self, client: Client, tx: Optional[Transaction], path,
                perm: int, allow_special: bool = False) -> tuple[str, _Node]:
        name = self._canon(client, path, allow_special)
        if name[0] == "@":
            node = self.special.get(name)
        else:
            node = self._get(tx, name)
        if node is not None:
            if (self._perm_for(client, node.perms) & perm) != perm:
                raise XenStoreError("EACCES", name)
            return name, node
        raise XenStoreError(self._missing_error(client, tx, name, perm), name)

    def _missing_error(self, client: Client, tx: Optional[Transaction],
                       name: str, perm: int) -> str:
        p = name
        while p != "/":
            p = _parent(p)
            n = self._peek(tx, p)
            if n is not None:
                return "ENOENT" if self._perm_for(client, n.perms) & perm else "EACCES"
        return "EACCES"

    def _parent_perms(self, tx: Optional[Transaction], name: str):
        if name == "/" or name[0] == "@":
            return None
        p = self._peek(tx, _parent(name))
        return p.perms if p is not None else None

    # ---------------------------------------------------------- watches

    def _fire(self, tx: Optional[Transaction], name: str, exact: bool,
              perm_sets: tuple) -> None:
        if tx is not None:
            tx.events.append((name, exact, perm_sets))
        else:
            self._deliver(name, exact, perm_sets)

    def _deliver(self, name: str, exact: bool, perm_sets: tuple) -> None:
        for c in list(self.clients):
            if not c.watches:
                continue
            if not c.privileged and not any(
                    p is not None and self._perm_for(c, p) & PERM_READ
                    for p in perm_sets):
                continue
            for w in list(c.watches):
                if exact:
                    hit = name == w.path
                else:
                    hit = _is_child(name, w.path) and (
                        w.depth is None or _levels_below(name, w.path) <= w.depth)
                if hit:
                    c.emit(w.event_path(name), w.token)

    def _fire_special(self, name: str, domid: int) -> None:
        node = self.special[name]
        specific = f"{name}/{domid}"
        for c in list(self.clients):
            if not c.watches or not self._perm_for(c, node.perms) & PERM_READ:
                continue
            for w in list(c.watches):
                if w.path == name:
                    c.emit(specific if w.depth == 1 else name, w.token)
                elif w.path == specific:
                    c.emit(specific, w.token)

    # ------------------------------------------------- node operations

    def read(self, client: Client, path: str, tx_id: int = 0) -> bytes:
        """READ: the node's value."""
        tx = self._tx(client, tx_id)
        return self._lookup(client, tx, path, PERM_READ)[1].value

    def exists(self, client: Client, path: str, tx_id: int = 0) -> bool:
        try:
            self.read(client, path, tx_id)
            return True
        except XenStoreError:
            return False

    def write(self, client: Client, path: str, value: bytes, tx_id: int = 0) -> None:
        """WRITE: set the value, creating the node and missing parents."""
        value = bytes(value)
        tx = self._tx(client, tx_id)
        try:
            name, node = self._lookup(client, tx, path, PERM_WRITE)
        except XenStoreError as e:
            if e.name != "ENOENT":
                raise
            name = self._canon(client, path)
            node = self._create(client, tx, name, value)
        else:
            probe = _Node(value, node.perms, node.children)
            self._check_size(client, probe)
            node = self._writable(tx, name)
            node.value = value
        self._fire(tx, name, False, (node.perms, self._parent_perms(tx, name)))

    def mkdir(self, client: Client, path: str, tx_id: int = 0) -> None:
        """MKDIR: make sure the node exists (existing values untouched)."""
        tx = self._tx(client, tx_id)
        try:
            self._lookup(client, tx, path, PERM_WRITE)
            return
        except XenStoreError as e:
            if e.name != "ENOENT":
                raise
        name = self._canon(client, path)
        node = self._create(client, tx, name, b"")
        self._fire(tx, name, False, (node.perms, self._parent_perms(tx, name)))

    def _create(self, client: Client, tx: Optional[Transaction], name: str,
                value: bytes) -> _Node:
        missing = [name]
        p = _parent(name)
        parent = self._get(tx, p)
        while parent is None:
            missing.append(p)
            p = _parent(p)
            parent = self._get(tx, p)
        missing.reverse()
        perms = parent.perms
        if not client.privileged:
            if self._count(tx, client.domid) + len(missing) > self.quotas["nodes"]:
                raise XenStoreError("ENOSPC", "node quota exceeded")
            perms = ((perms[0][0], client.domid),) + tuple(perms[1:])
        new = []
        for i, path in enumerate(missing):
            last = i == len(missing) - 1
            kids = [] if last else [_basename(missing[i + 1])]
            new.append(_Node(value if last else b"", perms, kids))
        if not client.privileged:
            self._check_size(client, _Node(parent.value, parent.perms,
                                           parent.children + [_basename(missing[0])]))
            for n in new:
                self._check_size(client, n)
        pw = self._writable(tx, p)
        pw.children.append(_basename(missing[0]))
        for path, n in zip(missing, new):
            self._insert(tx, path, n)
            self._count_add(tx, n.perms[0][1], 1)
        return new[-1]

    def rm(self, client: Client, path: str, tx_id: int = 0) -> None:
        """RM: remove the node and its whole subtree."""
        tx = self._tx(client, tx_id)
        try:
            name, _ = self._lookup(client, tx, path, PERM_WRITE)
        except XenStoreError as e:
            if e.name != "ENOENT":
                raise
            name = self._canon(client, path)
            if self._get(tx, _parent(name)) is not None:
                return
            raise
        if name == "/":
            raise XenStoreError("EINVAL", "cannot remove /")
        self._rm_tree(tx, name)

    def _subtree(self, tx: Optional[Transaction], name: str) -> list[tuple[str, _Node, tuple]]:
        """(path, node, parent perms) for the subtree, children first."""
        out = []
        root = self._get(tx, name)
        parent = self._get(tx, _parent(name))
        stack = [(name, root, parent.perms if parent else None, False)]
        while stack:
            path, node, pperms, expanded = stack.pop()
            if expanded:
                out.append((path, node, pperms))
                continue
            stack.append((path, node, pperms, True))
            for child in reversed(node.children):
                cpath = _join(path, child)
                cnode = self._get(tx, cpath)
                if cnode is not None:
                    stack.append((cpath, cnode, node.perms, False))
        return out

    def _rm_tree(self, tx: Optional[Transaction], name: str) -> None:
        doomed = self._subtree(tx, name)
        pw = self._writable(tx, _parent(name))
        try:
            pw.children.remove(_basename(name))
        except ValueError:
            pass
        for path, node, pperms in doomed:
            self._delete(tx, path)
            self._count_add(tx, node.perms[0][1], -1)
        for path, node, pperms in doomed:
            self._fire(tx, path, path != name, (node.perms, pperms))

    def directory(self, client: Client, path: str, tx_id: int = 0) -> list[str]:
        """DIRECTORY: names of the node's children."""
        tx = self._tx(client, tx_id)
        return list(self._lookup(client, tx, path, PERM_READ)[1].children)

    def directory_part(self, client: Client, path: str, offset: int,
                       tx_id: int = 0) -> bytes:
        """DIRECTORY_PART: the wire reply ``<gen>|<child>|*`` for the child
        list starting at byte ``offset``; an extra NUL ends the list."""
        tx = self._tx(client, tx_id)
        node = self._lookup(client, tx, path, PERM_READ)[1]
        gen = str(node.generation).encode() + b"\0"
        blob = b"".join(c.encode() + b"\0" for c in node.children)
        offset = max(0, int(offset))
        if offset >= len(blob):
            return gen + b"\0"
        maxlen = PAYLOAD_MAX - len(gen) - 1
        end = offset
        while end < len(blob):
            nul = blob.find(b"\0", end)
            if nul - offset >= maxlen:
                break
            end = nul + 1
        chunk = blob[offset:end]
        if end == len(blob):
            chunk += b"\0"
        return gen + chunk

    def get_perms(self, client: Client, path: str, tx_id: int = 0) -> list[Perm]:
        """GET_PERMS (special @ paths allowed)."""
        tx = self._tx(client, tx_id)
        return list(self._lookup(client, tx, path, PERM_READ, True)[1].perms)

    def set_perms(self, client: Client, path: str, perms: Iterable,
                  tx_id: int = 0) -> None:
        """SET_PERMS: owner (or privileged) only; only privileged clients
        may change the owner.  Entries may be tuples or strings like "r5"."""
        perms = tuple(_check_perm(p) for p in perms)
        if not perms:
            raise XenStoreError("EINVAL", "no permissions")
        tx = self._tx(client, tx_id)
        if not client.privileged and len(perms) > self.quotas["node-permissions"]:
            raise XenStoreError("ENOSPC", "too many permissions")
        name, node = self._lookup(client, tx, path, PERM_WRITE | PERM_OWNER, True)
        if not client.privileged and perms[0][1] != node.perms[0][1]:
            raise XenStoreError("EPERM", "only dom0 can change the owner")
        self._check_size(client, _Node(node.value, perms, node.children))
        old = node.perms
        if name[0] == "@":
            node.perms = perms
            self._changed()
            self._deliver(name, False, (old, perms))
            return
        w = self._writable(tx, name)
        w.perms = perms
        if old[0][1] != perms[0][1]:
            self._count_add(tx, old[0][1], -1)
            self._count_add(tx, perms[0][1], 1)
        self._fire(tx, name, False, (old, perms, self._parent_perms(tx, name)))

    # --------------------------------------------------------- watches

    def watch(self, client: Client, path: str, token: str,
              depth: Optional[int] = None) -> Watch:
        """WATCH: register, then fire once straight away."""
        if not isinstance(token, str):
            raise XenStoreError("EINVAL", "bad token")
        relative = isinstance(path, str) and bool(path) and path[0] not in "/@"
        name = self._canon(client, path, allow_special=True)
        if depth is not None:
            if depth < 0 or (name[0] == "@" and depth != 1):
                raise XenStoreError("EINVAL", "bad watch depth")
        for w in client.watches:
            if w.path == name and w.token == token:
                raise XenStoreError("EEXIST", "watch exists")
        if len(client.watches) >= self._limit(client, "watches"):
            raise XenStoreError("ENOSPC", "watch quota exceeded")
        w = Watch(name, token, relative,
                  len(client.implicit_path) + 1 if relative else 0, depth)
        client.watches.append(w)
        if getattr(client, "persist_watches", False):
            self.dirty = True          # a guest's watches survive a daemon restart
        client.emit(w.event_path(name), token)
        return w

    def unwatch(self, client: Client, path: str, token: str) -> None:
        name = self._canon(client, path, allow_special=True)
        for i, w in enumerate(client.watches):
            if w.path == name and w.token == token:
                del client.watches[i]
                if getattr(client, "persist_watches", False):
                    self.dirty = True
                return
        raise XenStoreError("ENOENT", "no such watch")

    def reset_watches(self, client: Client) -> None:
        """RESET_WATCHES: drop all watches and transactions of the client."""
        client.watches.clear()
        client.transactions.clear()

    # ---------------------------------------------------- transactions

    def transaction_start(self, client: Client) -> int:
        if len(client.transactions) >= self._limit(client, "transactions"):
            raise XenStoreError("ENOSPC", "transaction quota exceeded")
        while True:
            tx_id = client.next_tx_id
            client.next_tx_id = (tx_id + 1) & 0xFFFFFFFF or 1
            if tx_id not in client.transactions:
                break
        client.transactions[tx_id] = Transaction(tx_id, client)
        return tx_id

    def transaction_end(self, client: Client, tx_id: int, commit: bool) -> None:
        """Commit (EAGAIN on conflict) or abort the transaction."""
        tx = client.transactions.pop(tx_id, None) if tx_id else None
        if tx is None:
            raise XenStoreError("ENOENT", f"no transaction {tx_id}")
        if not commit:
            return
        for path, gen in tx.accessed.items():
            cur = self.nodes.get(path)
            if (cur.generation if cur is not None else None) != gen:
                raise XenStoreError("EAGAIN", f"conflict on {path}")
        if not client.privileged:
            d = tx.delta[client.domid]
            if d > 0 and self.node_count[client.domid] + d > self.quotas["nodes"]:
                raise XenStoreError("ENOSPC", "node quota exceeded")
        if not tx.overlay:
            for ev in tx.events:
                self._deliver(*ev)
            return
        for path, node in tx.overlay.items():
            if node is None:
                self.nodes.pop(path, None)
            else:
                self._bump(node)
                self.nodes[path] = node
        for domid, d in tx.delta.items():
            self.node_count[domid] += d
            if self.node_count[domid] == 0:
                del self.node_count[domid]
        self._changed()
        for ev in tx.events:
            self._deliver(*ev)

    # --------------------------------------------------------- domains

    def _require_priv(self, client: Client) -> None:
        if not client.privileged:
            raise XenStoreError("EACCES", "privileged operation")

    @staticmethod
    def _domid(value) -> int:
        try:
            domid = int(value)
        except (TypeError, ValueError):
            raise XenStoreError("EINVAL", f"bad domid {value!r}") from None
        if not 0 <= domid <= 0xFFFF:
            raise XenStoreError("EINVAL", f"bad domid {value!r}")
        return domid

    def introduce(self, client: Client, domid, gfn, evtchn) -> None:
        """INTRODUCE: start talking to a domain (privileged)."""
        self._require_priv(client)
        domid = self._domid(domid)
        try:
            gfn, evtchn = int(gfn), int(evtchn)
        except (TypeError, ValueError):
            raise XenStoreError("EINVAL", "bad gfn or event channel") from None
        if domid >= DOMID_FIRST_RESERVED or evtchn <= 0:
            raise XenStoreError("EINVAL", "bad domid or event channel")
        d = self.domains.get(domid)
        first = d is None or not d.introduced
        if self.on_introduce is not None:
            try:
                self.on_introduce(domid, gfn, evtchn, first)
            except XenStoreError:
                raise
            except Exception as e:  # the transport could not be set up
                log.error("introduce of domain %d failed: %s", domid, e)
                raise XenStoreError("EINVAL", str(e)) from e
        if d is None:
            d = self.domains[domid] = Domain(domid)
        if not first:
            # re-introduction resets the domain's connection
            for c in self.clients:
                if c.domid == domid and not c.privileged:
                    self.reset_watches(c)
        d.introduced, d.gfn, d.evtchn, d.shutdown = True, gfn, evtchn, False
        if first and domid != 0:
            self._fire_special("@introduceDomain", domid)

    def mark_introduced(self, domid: int) -> None:
        """Record a domain as introduced without an INTRODUCE request (for
        transports attached directly by the hypervisor)."""
        d = self.domains.get(domid)
        if d is None:
            d = self.domains[domid] = Domain(domid)
        if not d.introduced:
            d.introduced = True
            d.shutdown = False
            if domid != 0:
                self._fire_special("@introduceDomain", domid)

    def _connected(self, domid: int) -> Domain:
        d = self.domains.get(domid)
        if d is None or not d.introduced:
            raise XenStoreError("ENOENT", f"domain {domid} not introduced")
        return d

    def release(self, client: Client, domid) -> None:
        """RELEASE: forget a domain, remove the nodes it owns, fire
        @releaseDomain (privileged)."""
        self._require_priv(client)
        domid = self._domid(domid)
        if domid == 0:
            raise XenStoreError("EINVAL", "cannot release dom0")
        self._connected(domid)
        self.domain_destroyed(domid)

    def domain_destroyed(self, domid: int) -> None:
        """The domain is gone: drop its connections' state, remove the
        nodes it owns (with their subtrees) and fire @releaseDomain."""
        d = self.domains.pop(domid, None)
        for c in self.clients:
            if c.domid == domid and not c.privileged:
                self.reset_watches(c)
        if self.on_release is not None:
            try:
                self.on_release(domid)
            except Exception as e:  # keep the store consistent regardless
                log.error("release hook for domain %d failed: %s", domid, e)
        for other in self.domains.values():
            if other.target == domid:
                other.target = None
        self._remove_owned(domid)
        if d is not None and d.introduced:
            self._fire_special("@releaseDomain", domid)

    def _remove_owned(self, domid: int) -> None:
        if not self.node_count.get(domid):
            return
        roots = []
        stack = ["/"]
        while stack:
            path = stack.pop()
            node = self.nodes.get(path)
            if node is None:
                continue
            if node.perms[0][1] == domid and path != "/":
                roots.append(path)
                continue
            stack.extend(_join(path, c) for c in node.children)
        for path in roots:
            if path in self.nodes:
                self._rm_tree(None, path)

    def domain_shutdown(self, domid: int) -> None:
        """The hypervisor saw the domain shut down: fire @releaseDomain once
        (until RESUME)."""
        d = self.domains.get(domid)
        if d is not None and d.introduced and not d.shutdown:
            d.shutdown = True
            self._fire_special("@releaseDomain", domid)

    def resume(self, client: Client, domid) -> None:
        self._require_priv(client)
        domid = self._domid(domid)
        if domid == 0:
            raise XenStoreError("EINVAL", "cannot resume dom0")
        self._connected(domid).shutdown = False

    def set_target(self, client: Client, domid, target) -> None:
        """SET_TARGET: ``domid`` gets the rights of ``target``."""
        self._require_priv(client)
        domid, target = self._domid(domid), self._domid(target)
        d = self._connected(domid)
        self._connected(target)
        d.target = target

    def get_domain_path(self, client: Client, domid) -> str:
        return f"/local/domain/{self._domid(domid)}"

    def is_domain_introduced(self, client: Client, domid) -> bool:
        self._require_priv(client)
        domid = self._domid(domid)
        if domid in (0, DOMID_SELF):
            return True
        d = self.domains.get(domid)
        return d is not None and d.introduced

    # --------------------------------------------------------- control

    def control(self, client: Client, args: list[str]) -> str:
        """CONTROL: a few of xenstored's commands; returns the reply text."""
        self._require_priv(client)
        if not args:
            raise XenStoreError("EINVAL", "no command")
        cmd, rest = args[0], list(args[1:])
        if cmd == "check":
            if rest:
                raise XenStoreError("EINVAL")
            problems = self.check()
            for p in problems:
                log.error("check: %s", p)
            return "OK"
        if cmd == "log":
            if not rest:
                return f"Log switch settings:\nlogging : {'on' if self.logging_enabled else 'off'}\n"
            if rest == ["on"] or rest == ["off"]:
                self.logging_enabled = rest[0] == "on"
                return "OK"
            raise XenStoreError("EINVAL")
        if cmd == "print":
            if len(rest) != 1:
                raise XenStoreError("EINVAL")
            log.warning("control: %s", rest[0])
            return "OK"
        if cmd == "memreport":
            watches = sum(len(c.watches) for c in self.clients)
            txs = sum(len(c.transactions) for c in self.clients)
            size = sum(len(p) + n.size() for p, n in self.nodes.items())
            return (f"nodes: {len(self.nodes)}\nbytes: {size}\n"
                    f"connections: {len(self.clients)}\nwatches: {watches}\n"
                    f"transactions: {txs}\n")
        if cmd == "quota":
            if not rest:
                lines = ["Quota settings:"]
                for k, v in self.quotas.items():
                    lines.append(f"{k:<17}: {v:8d} {QUOTA_DESCRIPTIONS[k]}")
                return "\n".join(lines) + "\n"
            if rest[0] == "set":
                if len(rest) != 3 or rest[1] not in self.quotas:
                    raise XenStoreError("EINVAL")
                try:
                    val = int(rest[2])
                except ValueError:
                    raise XenStoreError("EINVAL") from None
                if val < 1:
                    raise XenStoreError("EINVAL")
                self.quotas[rest[1]] = val
                return "OK"
            if len(rest) != 1:
                raise XenStoreError("EINVAL")
            domid = self._domid(rest[0])
            conns = [c for c in self.clients if c.domid == domid]
            usage = {
                "nodes": self.node_count.get(domid, 0),
                "watches": sum(len(c.watches) for c in conns),
                "transactions": sum(len(c.transactions) for c in conns),
            }
            lines = [f"Domain {domid}:"]
            for k, v in usage.items():
                lines.append(f"{k:<17}: {v:8d} (max {self.quotas[k]:8d})")
            return "\n".join(lines) + "\n"
        if cmd == "help":
            return ("check\n"
                    "log             [on|off]\n"
                    "memreport\n"
                    "print           <string>\n"
                    "quota           [set <name> <val>|<domid>]\n"
                    "help\n")
        raise XenStoreError("EINVAL", f"unknown control command {cmd!r}")

    # --------------------------------------------- whole-store helpers

    def walk(self, path: str = "/") -> Iterator[tuple[str, bytes, tuple]]:
        """(path, value, perms) of the subtree, parents first, children in
        order.  No permission checks: for dom0-side code and tests."""
        stack = [path]
        while stack:
            p = stack.pop()
            n = self.nodes.get(p)
            if n is None:
                continue
            yield p, n.value, n.perms
            stack.extend(_join(p, c) for c in reversed(n.children))

    def check(self) -> list[str]:
        """Consistency problems of the tree (empty when healthy)."""
        problems = []
        if "/" not in self.nodes:
            return ["root missing"]
        counts: Counter = Counter()
        seen = set()
        for path in self.walk("/"):
            seen.add(path[0])
        for path, node in self.nodes.items():
            counts[node.perms[0][1]] += 1
            if not node.perms:
                problems.append(f"{path}: no permissions")
            if path not in seen:
                problems.append(f"{path}: unreachable")
            if len(set(node.children)) != len(node.children):
                problems.append(f"{path}: duplicate children")
            for c in node.children:
                if _join(path, c) not in self.nodes:
                    problems.append(f"{path}: missing child {c}")
        counts = +counts
        if counts != +self.node_count:
            problems.append(f"node counts {dict(self.node_count)} != {dict(counts)}")
        return problems

    def _load_node(self, path: str, value: bytes, perms: tuple) -> None:
        """Add a node while building a store (no checks, no watches)."""
        if path in self.nodes:
            self.nodes[path].value = value
            old = self.nodes[path].perms
            self.node_count[old[0][1]] -= 1
            self.nodes[path].perms = perms
            self.node_count[perms[0][1]] += 1
            return
        if path != "/":
            parent = self.nodes[_parent(path)]
            parent.children.append(_basename(path))
        node = _Node(value, perms, [])
        self._bump(node)
        self.nodes[path] = node
        self.node_count[perms[0][1]] += 1

    def to_state(self) -> dict:
        """A JSON-able snapshot of nodes and permissions."""
        return {
            "format": "pyxen-xenstore",
            "version": 1,
            "generation": self.generation,
            "nodes": [
                [p, base64.b64encode(v).decode("ascii"), [format_perm(x) for x in perms]]
                for p, v, perms in self.walk("/")
            ],
            "special": {name: [format_perm(x) for x in n.perms]
                        for name, n in self.special.items()},
            # guests' ring connections outlive a restart of the daemon (the
            # ring lives in guest memory), so their watches are kept too
            "ring_watches": {str(c.domid): [[w.path, w.token, w.relative, w.prefix_len, w.depth]
                                            for w in c.watches]
                             for c in self.clients if getattr(c, "persist_watches", False)},
        }

    @classmethod
    def from_state(cls, state: dict, quotas: Optional[dict] = None) -> "XenStore":
        """Rebuild a store from :meth:`to_state` output."""
        if state.get("format") != "pyxen-xenstore" or state.get("version") != 1:
            raise ValueError("not a pyxen xenstore state")
        store = cls(quotas, initial=False)
        for entry in state["nodes"]:
            path, value, perms = entry
            if not isinstance(path, str) or not (path == "/" or _VALID_PATH.match(path)):
                raise ValueError(f"bad path in state: {path!r}")
            perms = tuple(parse_perm(p) for p in perms)
            if not perms:
                raise ValueError(f"no permissions for {path}")
            if path != "/" and _parent(path) not in store.nodes:
                raise ValueError(f"orphan node in state: {path}")
            store._load_node(path, base64.b64decode(value, validate=True), perms)
        if "/" not in store.nodes:
            raise ValueError("state has no root node")
        for name, perms in state.get("special", {}).items():
            if name in store.special:
                store.special[name].perms = tuple(parse_perm(p) for p in perms)
        store.generation = max(store.generation, int(state.get("generation", 0)))
        store.saved_ring_watches = {
            int(d): [Watch(p, t, bool(r), int(pl), dp) for p, t, r, pl, dp in ws]
            for d, ws in state.get("ring_watches", {}).items()}
        store.dirty = False
        return store
