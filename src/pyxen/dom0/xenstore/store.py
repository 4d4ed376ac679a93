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
* Quotas (per domain, only for unprivileged clients; dom0 is exempt, as
  in Xen), with Xen 4.17's defaults and C xenstored's errors: nodes owned
  (1000, ENOSPC), node size (2048 bytes as C xenstored counts a record,
  ENOSPC), permissions per node (5, ENOSPC), path length (2048 below the
  domain's home, EINVAL), watches (128, E2BIG), transactions (10, ENOSPC),
  nodes accessed per transaction (1024, ENOSPC, and the transaction then
  fails at commit with ENOMEM), memory (2.5 MB hard: ENOMEM, the ring is
  not read and watch events to the domain are dropped; 2 MB soft: a
  warning).  A domain's memory counts the nodes it owns (path + record),
  its connections' watches, queued replies and events, and the nodes its
  transactions hold.  Outstanding requests (20) are limited by the
  transports.  Privileged clients have generous safety caps on watches and
  transactions so no client can grow memory without bound.
* A transaction keeps one entry per node however often it is written, and
  one pending watch event per node (C xenstored's accessed-node list).
* Persistence: with ``journal`` set to a list, every change to the tree
  appends records describing the new state of the nodes it touched (see
  :mod:`.persist`); the store itself does no I/O.
"""
from __future__ import annotations

import base64
import logging
import re
import time
from collections import Counter
from contextlib import contextmanager
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
    "DEFAULT_SOFT_QUOTAS",
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

#: per-domain hard quotas (names and defaults as Xen 4.17's xenstored),
#: unprivileged domains only; 0 turns the memory quota off
DEFAULT_QUOTAS = {
    "nodes": 1000,
    "watches": 128,
    "transactions": 10,
    "outstanding": 20,
    "transaction-nodes": 1024,
    "memory": 2 * 1024 * 1024 + 512 * 1024,
    "node-size": 2048,
    "path-max": REL_PATH_MAX,
    "permissions": 5,
}
#: soft quotas: crossing one only logs a warning (as xenstored's -q)
DEFAULT_SOFT_QUOTAS = {
    "memory": 2 * 1024 * 1024,
}
QUOTA_DESCRIPTIONS = {
    "nodes": "Nodes per domain",
    "watches": "Watches per domain",
    "transactions": "Transactions per domain",
    "outstanding": "Outstanding requests per domain",
    "transaction-nodes": "Max. number of accessed nodes per transaction",
    "memory": "Total Xenstore memory per domain (error level)",
    "node-size": "Max. size of a node",
    "path-max": "Max. length of a node path",
    "permissions": "Max. number of permissions per node",
}
SOFT_QUOTA_DESCRIPTIONS = {
    "memory": "Total Xenstore memory per domain (warning level)",
}
#: older pyxen names of quotas
QUOTA_ALIASES = {"node-permissions": "permissions"}
#: caps that also bind privileged clients (Xen has none; we want bounds)
PRIVILEGED_LIMITS = {
    "watches": 65536,
    "transactions": 4096,
    "transaction-nodes": 1 << 20,
}
#: bytes C xenstored accounts for a node record besides its data
#: (struct xs_tdb_record_hdr) and for each permission entry
NODE_HEADER = 24
PERM_SIZE = 8
#: at most one "below the quota again" / soft-quota message per domain this
#: often (seconds), like xenstored
_MEM_WARN_INTERVAL = 5.0

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
    __slots__ = ("value", "perms", "children", "generation", "childlen")

    def __init__(self, value: bytes, perms: tuple, children: list, generation: int = 0,
                 childlen: Optional[int] = None):
        self.value = value
        self.perms = perms
        self.children = children
        self.generation = generation
        # bytes of the NUL-terminated child names, kept up to date by
        # add_child / remove_child so sizes cost O(1)
        self.childlen = (sum(len(c) + 1 for c in children)
                         if childlen is None else childlen)

    def copy(self) -> "_Node":
        return _Node(self.value, self.perms, list(self.children), self.generation,
                     self.childlen)

    def add_child(self, name: str) -> None:
        self.children.append(name)
        self.childlen += len(name) + 1

    def remove_child(self, name: str) -> bool:
        try:
            self.children.remove(name)
        except ValueError:
            return False
        self.childlen -= len(name) + 1
        return True

    def set_children(self, names: list) -> None:
        self.children = names
        self.childlen = sum(len(c) + 1 for c in names)

    def size(self) -> int:
        """The record size C xenstored accounts (and checks against the
        node-size quota): header, permissions, data, child names."""
        return NODE_HEADER + PERM_SIZE * len(self.perms) + len(self.value) + self.childlen


def _cost(path: str, node: _Node) -> int:
    """Memory a node is accounted for (key + record, as C xenstored)."""
    return len(path) + node.size()


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
    removed ones) over the live tree, plus what was read (as it was read).

    Everything here is bounded by the number of distinct nodes accessed
    (the transaction-nodes quota): a node written any number of times has
    one copy and at most one pending watch event, as with C xenstored."""

    __slots__ = ("id", "client", "overlay", "seen", "accessed", "events", "delta",
                 "mem", "touched", "failed")

    def __init__(self, tx_id: int, client: "Client"):
        self.id = tx_id
        self.client = client
        self.overlay: dict[str, Optional[_Node]] = {}
        # copies of unmodified nodes as first read (None: absent then); live
        # nodes change in place, so a reference would not do
        self.seen: dict[str, Optional[_Node]] = {}
        self.accessed: dict[str, Optional[int]] = {}   # path -> generation seen
        # watch events to fire at commit, one per node: path -> [exact,
        # perm sets of the first firing, perm sets of the last one]
        self.events: dict[str, list] = {}
        self.delta: Counter = Counter()                 # node count per owner
        self.mem = 0            # bytes of the copies held (overlay and seen)
        self.touched: dict[str, None] = {}   # overlay paths changed by this request
        self.failed = False     # a quota hit inside: the commit fails (ENOMEM)


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
        #: the ring's watches survive a restart of the daemon
        self.persist_watches = False
        #: bytes of this client's watches (path + token), for the memory quota
        self.watch_mem = 0
        #: bytes of replies and events queued for this client (its transport
        #: keeps this up to date)
        self.queued_bytes = 0
        #: watch events this client's requests caused that still wait in some
        #: connection's queue: they keep requests outstanding, as in Xen
        self.events_pending = 0

    @property
    def implicit_path(self) -> str:
        return f"/local/domain/{self.domid}"

    def tx_mem(self) -> int:
        return sum(tx.mem for tx in self.transactions.values())

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

    def __init__(self, quotas: Optional[dict] = None, *, initial: bool = True,
                 soft_quotas: Optional[dict] = None):
        self.nodes: dict[str, _Node] = {}
        self.special: dict[str, _Node] = {
            name: _Node(b"", (("n", 0),), []) for name in SPECIAL_PATHS}
        self.generation = 0
        self.node_count: Counter = Counter()
        #: bytes of the nodes each domain owns (see _cost)
        self.node_mem: Counter = Counter()
        self.clients: list[Client] = []
        self._by_domid: dict[int, list[Client]] = {}
        self.domains: dict[int, Domain] = {}
        self.quotas = dict(DEFAULT_QUOTAS)
        self.soft_quotas = dict(DEFAULT_SOFT_QUOTAS)
        for table, given in ((self.quotas, quotas), (self.soft_quotas, soft_quotas)):
            for k, v in (given or {}).items():
                k = QUOTA_ALIASES.get(k, k)
                if k not in table:
                    raise ValueError(f"unknown quota {k!r}")
                table[k] = int(v)
        self.logging_enabled = True
        #: set on every committed change; persistence clears it
        self.dirty = False
        #: counts committed changes (for tests and persistence)
        self.change_count = 0
        #: with a list here, every change appends journal records (see
        #: :mod:`.persist`); the owner drains it
        self.journal: Optional[list] = None
        #: one more at the end of every request that may change something;
        #: replies and events are tagged with it so a transport can hold
        #: them until the journal up to there is on disk
        self.op_seq = 0
        self._op_depth = 0
        #: live-tree paths changed by the running request (ordered)
        self._touched: dict[str, bool] = {}
        self._tx_touched: list[Transaction] = []
        #: the client whose request is being served (set by the transport):
        #: the watch events it causes count as its outstanding requests
        self.origin: Optional[Client] = None
        #: domains over their soft / hard memory quota (logged once)
        self._mem_warned: dict[int, tuple[str, float]] = {}
        #: guests' watches loaded from a state, until their ring comes back
        self.saved_ring_watches: dict[int, list[Watch]] = {}
        #: hooks for the server: on_introduce(domid, gfn, evtchn, first),
        #: on_release(domid)
        self.on_introduce: Optional[Callable[[int, int, int, bool], None]] = None
        self.on_release: Optional[Callable[[int], None]] = None
        self.on_change: Optional[Callable[[], None]] = None
        if initial:
            for path in INITIAL_PATHS:
                self._load_node(path, b"", (("n", 0),))
            self._recount_memory()
            self.dirty = False

    # ----------------------------------------------------------- clients

    def new_client(self, domid: int = 0, privileged: Optional[bool] = None,
                   sink: Optional[Callable[[str, str], None]] = None) -> Client:
        if privileged is None:
            privileged = domid == 0
        c = Client(self, domid, privileged, sink)
        self.clients.append(c)
        self._by_domid.setdefault(domid, []).append(c)
        return c

    def remove_client(self, client: Client) -> None:
        with self._mutation():
            if client.persist_watches and client.watches:
                self._journal_watches(client, "W0")
            self._drop_watches(client)
            client.transactions.clear()
            client.closed = True
            try:
                self.clients.remove(client)
            except ValueError:
                pass
            peers = self._by_domid.get(client.domid)
            if peers is not None and client in peers:
                peers.remove(client)
                if not peers:
                    del self._by_domid[client.domid]

    # ------------------------------------------------------- internals

    def _changed(self) -> None:
        self.dirty = True
        self.change_count += 1
        if self.on_change is not None:
            self.on_change()

    @contextmanager
    def _mutation(self):
        """Around every request that may change the store: at the end, the
        memory of the nodes it touched is accounted again and their new
        state goes to the journal, in the order they were first touched."""
        self._op_depth += 1
        try:
            yield
        finally:
            self._op_depth -= 1
            if not self._op_depth:
                self._settle()

    def current_lsn(self) -> int:
        """The sequence number a reply or event queued now depends on: the
        journal up to the end of the running request (if any)."""
        return self.op_seq + (1 if self._op_depth else 0)

    def _touch(self, path: str, journal: bool = True) -> None:
        """A live node (or its absence) at ``path`` is about to change;
        ``journal``: its new state is journalled at the end of the request
        (a commit journals its own records)."""
        if path not in self._touched:
            node = self.nodes.get(path)
            if node is not None:
                self.node_mem[node.perms[0][1]] -= _cost(path, node)
            self._touched[path] = journal

    def _tx_touch(self, tx: Transaction, path: str) -> None:
        if path not in tx.touched:
            node = tx.overlay.get(path)
            if node is not None:
                tx.mem -= _cost(path, node)
            if not tx.touched:
                self._tx_touched.append(tx)
            tx.touched[path] = None

    def _settle(self) -> None:
        self.op_seq += 1
        if self._touched:
            journal = self.journal
            for path, journal_it in self._touched.items():
                node = self.nodes.get(path)
                if node is not None:
                    self.node_mem[node.perms[0][1]] += _cost(path, node)
                    if journal is not None and journal_it:
                        journal.append(("P", path, node.value, node.perms))
                elif journal is not None and journal_it:
                    journal.append(("D", path))
            self._touched.clear()
            self.node_mem = +self.node_mem
        for tx in self._tx_touched:
            for path in tx.touched:
                node = tx.overlay.get(path)
                if node is not None:
                    tx.mem += _cost(path, node)
            tx.touched.clear()
        self._tx_touched.clear()

    # ---------------------------------------------------- memory quota

    def domain_memory(self, domid: int) -> int:
        """Bytes accounted to a domain: nodes it owns, and its connections'
        watches, queued output and transactions."""
        total = self.node_mem.get(domid, 0)
        for c in self._by_domid.get(domid, ()):
            total += c.watch_mem + c.queued_bytes
            if c.transactions:
                total += c.tx_mem()
        return total

    def over_memory_quota(self, domid: int, extra: int = 0) -> bool:
        """Would ``extra`` more bytes take the domain to its hard memory
        quota?  Logs crossing the soft and hard quotas once.  Never for
        dom0."""
        hard = self.quotas["memory"]
        soft = self.soft_quotas["memory"]
        if domid == 0 or not (hard or soft):
            return False
        mem = self.domain_memory(domid) + extra
        state = ("hard" if hard and mem >= hard else
                 "soft" if soft and mem >= soft else "")
        prev, when = self._mem_warned.get(domid, ("", 0.0))
        now = time.monotonic()
        if state != prev and (state == "hard" or now - when >= _MEM_WARN_INTERVAL):
            if state == "hard":
                log.error("domain %d exceeds its hard memory quota (%d >= %d bytes): "
                          "its Xenstore interface is stalled", domid, mem, hard)
            elif state == "soft":
                log.warning("domain %d exceeds its soft memory quota (%d >= %d bytes)",
                            domid, mem, soft)
            else:
                log.info("domain %d below its memory quota again", domid)
            if state:
                self._mem_warned[domid] = (state, now)
            else:
                self._mem_warned.pop(domid, None)
        return state == "hard"

    def _check_memory(self, client: Client, extra: int,
                      tx: Optional[Transaction] = None) -> None:
        if not client.privileged and self.over_memory_quota(client.domid, extra):
            if tx is not None:
                tx.failed = True
            raise XenStoreError("ENOMEM", "memory quota exceeded")

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
                # as C xenstored: this request fails, and so will the commit
                tx.failed = True
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
        if n is not None:
            cost = _cost(path, n)
            self._check_memory(tx.client, cost, tx)
        self._access(tx, path, n)
        if n is not None:
            n = n.copy()
            tx.mem += cost
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
            self._touch(path)
            n = self.nodes[path]
            self._bump(n)
            self._changed()
            return n
        n = tx.overlay.get(path, _MISSING)
        if n is _MISSING:
            n = self._get(tx, path)
            if n is not None:
                # the private copy made when it was read becomes the
                # transaction's version of the node
                del tx.seen[path]
                tx.mem -= _cost(path, n)
                self._tx_touch(tx, path)
                tx.overlay[path] = n
        else:
            self._tx_touch(tx, path)
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
            self._touch(path)
            self.nodes[path] = node
            self._changed()
        else:
            if path not in tx.overlay:
                self._access(tx, path, self.nodes.get(path))
                self._drop_seen(tx, path)
            self._tx_touch(tx, path)
            tx.overlay[path] = node

    def _delete(self, tx: Optional[Transaction], path: str) -> None:
        if tx is None:
            self._touch(path)
            del self.nodes[path]
            self._changed()
        else:
            if path not in tx.overlay:
                self._access(tx, path, self.nodes.get(path))
                self._drop_seen(tx, path)
            self._tx_touch(tx, path)
            tx.overlay[path] = None

    @staticmethod
    def _drop_seen(tx: Transaction, path: str) -> None:
        n = tx.seen.pop(path, None)
        if n is not None:
            tx.mem -= _cost(path, n)

    def _count(self, tx: Optional[Transaction], domid: int) -> int:
        return self.node_count[domid] + (tx.delta[domid] if tx is not None else 0)

    def _count_add(self, tx: Optional[Transaction], domid: int, n: int) -> None:
        if tx is None:
            self.node_count[domid] += n
            if self.node_count[domid] == 0:
                del self.node_count[domid]
        else:
            tx.delta[domid] += n

    def _check_size(self, client: Client, size: int) -> None:
        # C xenstored refuses a record of node-size bytes or more
        if not client.privileged and size >= self.quotas["node-size"]:
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
        if tx is None:
            self._deliver(name, exact, perm_sets)
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

    def _deliver_tx_events(self, tx: Transaction) -> None:
        for name, (exact, first, last) in tx.events.items():
            self._deliver(name, exact, first if first is last else first + last)

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
        with self._mutation():
            try:
                name, node = self._lookup(client, tx, path, PERM_WRITE)
            except XenStoreError as e:
                if e.name != "ENOENT":
                    raise
                name = self._canon(client, path)
                node = self._create(client, tx, name, value)
            else:
                self._check_size(client, node.size() - len(node.value) + len(value))
                if tx is not None and name not in tx.overlay:
                    grow = _cost(name, node) - len(node.value) + len(value)
                else:
                    grow = len(value) - len(node.value)
                if grow > 0:
                    self._check_memory(client, grow, tx)
                node = self._writable(tx, name)
                node.value = value
            self._fire(tx, name, False, (node.perms, self._parent_perms(tx, name)))

    def mkdir(self, client: Client, path: str, tx_id: int = 0) -> None:
        """MKDIR: make sure the node exists (existing values untouched)."""
        tx = self._tx(client, tx_id)
        with self._mutation():
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
            first = _basename(missing[0])
            self._check_size(client, parent.size() + len(first) + 1)
            for n in new:
                self._check_size(client, n.size())
            grow = sum(_cost(path, n) for path, n in zip(missing, new)) + len(first) + 1
            if tx is not None and p not in tx.overlay:
                grow += _cost(p, parent)
            self._check_memory(client, grow, tx)
        pw = self._writable(tx, p)
        pw.add_child(_basename(missing[0]))
        for path, n in zip(missing, new):
            self._insert(tx, path, n)
            self._count_add(tx, n.perms[0][1], 1)
        return new[-1]

    def rm(self, client: Client, path: str, tx_id: int = 0) -> None:
        """RM: remove the node and its whole subtree."""
        tx = self._tx(client, tx_id)
        with self._mutation():
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
        pw.remove_child(_basename(name))
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
        if not client.privileged and len(perms) > self.quotas["permissions"]:
            raise XenStoreError("ENOSPC", "too many permissions")
        with self._mutation():
            name, node = self._lookup(client, tx, path, PERM_WRITE | PERM_OWNER, True)
            if not client.privileged and perms[0][1] != node.perms[0][1]:
                raise XenStoreError("EPERM", "only dom0 can change the owner")
            self._check_size(client, node.size() + PERM_SIZE * (len(perms) - len(node.perms)))
            old = node.perms
            if name[0] == "@":
                node.perms = perms
                self._changed()
                if self.journal is not None:
                    self.journal.append(("S", name, perms))
                self._deliver(name, False, (old, perms))
                return
            grow = PERM_SIZE * (len(perms) - len(old))
            if tx is not None and name not in tx.overlay:
                grow += _cost(name, node)
            if grow > 0:
                self._check_memory(client, grow, tx)
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
            # C xenstored's answer to a domain over its watch quota
            raise XenStoreError("E2BIG", "watch quota exceeded")
        mem = len(name) + len(token)
        self._check_memory(client, mem)
        with self._mutation():
            w = Watch(name, token, relative,
                      len(client.implicit_path) + 1 if relative else 0, depth)
            client.watches.append(w)
            client.watch_mem += mem
            if client.persist_watches:
                # a guest's watches survive a daemon restart
                self.dirty = True
                self._journal_watches(client, "W+", w)
            client.emit(w.event_path(name), token)
        return w

    def unwatch(self, client: Client, path: str, token: str) -> None:
        name = self._canon(client, path, allow_special=True)
        for i, w in enumerate(client.watches):
            if w.path == name and w.token == token:
                with self._mutation():
                    del client.watches[i]
                    client.watch_mem -= len(w.path) + len(w.token)
                    if client.persist_watches:
                        self.dirty = True
                        self._journal_watches(client, "W-", w)
                return
        raise XenStoreError("ENOENT", "no such watch")

    def reset_watches(self, client: Client) -> None:
        """RESET_WATCHES: drop all watches and transactions of the client."""
        with self._mutation():
            if client.persist_watches and client.watches:
                self.dirty = True
                self._journal_watches(client, "W0")
            self._drop_watches(client)
            client.transactions.clear()

    @staticmethod
    def _drop_watches(client: Client) -> None:
        client.watches.clear()
        client.watch_mem = 0

    def _journal_watches(self, client: Client, op: str, w: Optional[Watch] = None) -> None:
        if self.journal is None:
            return
        if op == "W0":
            self.journal.append(("W0", client.domid))
        elif op == "W+":
            self.journal.append(("W+", client.domid, w.path, w.token, w.relative,
                                 w.prefix_len, w.depth))
        else:
            self.journal.append(("W-", client.domid, w.path, w.token))

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
        """Commit (EAGAIN on conflict) or abort the transaction.  A
        transaction that hit a quota inside fails with ENOMEM, as C
        xenstored's."""
        tx = client.transactions.pop(tx_id, None) if tx_id else None
        if tx is None:
            raise XenStoreError("ENOENT", f"no transaction {tx_id}")
        if not commit:
            return
        if tx.failed:
            raise XenStoreError("ENOMEM", "the transaction hit a quota")
        for path, gen in tx.accessed.items():
            cur = self.nodes.get(path)
            if (cur.generation if cur is not None else None) != gen:
                raise XenStoreError("EAGAIN", f"conflict on {path}")
        if not client.privileged:
            d = tx.delta[client.domid]
            if d > 0 and self.node_count[client.domid] + d > self.quotas["nodes"]:
                raise XenStoreError("ENOSPC", "node quota exceeded")
        with self._mutation():
            if tx.overlay:
                if self.journal is not None:
                    self.journal.extend(self._commit_records(tx))
                for path, node in tx.overlay.items():
                    self._touch(path, journal=False)
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
            self._deliver_tx_events(tx)

    def _commit_records(self, tx: Transaction) -> list:
        """Journal records that turn the live tree into the committed one
        when replayed (see :func:`.persist.replay`): removals, then new and
        changed nodes parents first, then the child order of every node
        whose children would otherwise come out in another order."""
        live = self.nodes
        dels = [p for p, n in tx.overlay.items() if n is None and p in live]
        gone_roots = set(dels)

        def gone(path: str) -> bool:
            while True:
                if path in gone_roots:
                    return True
                if path == "/":
                    return False
                path = _parent(path)

        puts = sorted((p for p, n in tx.overlay.items() if n is not None),
                      key=lambda p: 0 if p == "/" else p.count("/"))
        recs: list = [("D", p) for p in dels]
        appended: dict[str, list] = {}
        for p in puts:
            n = tx.overlay[p]
            recs.append(("P", p, n.value, n.perms))
            if p != "/" and (p not in live or gone(p)):
                appended.setdefault(_parent(p), []).append(_basename(p))
        for p in puts:
            final = tx.overlay[p].children
            old = live.get(p)
            if old is not None and not gone(p):
                predicted = [c for c in old.children if not gone(_join(p, c))]
            else:
                predicted = []
            predicted += appended.get(p, ())
            if predicted != final:
                recs.append(("O", p, list(final)))
        return recs

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
        with self._mutation():
            self._domain_destroyed(domid)
        self._mem_warned.pop(domid, None)

    def _domain_destroyed(self, domid: int) -> None:
        d = self.domains.pop(domid, None)
        if self.saved_ring_watches.pop(domid, None) and self.journal is not None:
            self.journal.append(("W0", domid))
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
        if cmd in ("quota", "quota-soft"):
            table, descr = ((self.quotas, QUOTA_DESCRIPTIONS) if cmd == "quota"
                            else (self.soft_quotas, SOFT_QUOTA_DESCRIPTIONS))
            if not rest:
                lines = ["Quota settings:"]
                for k, v in table.items():
                    lines.append(f"{k:<17}: {v:8d} {descr[k]}")
                return "\n".join(lines) + "\n"
            if rest[0] == "set":
                name = QUOTA_ALIASES.get(rest[1], rest[1]) if len(rest) == 3 else None
                if name not in table:
                    raise XenStoreError("EINVAL")
                try:
                    val = int(rest[2])
                except ValueError:
                    raise XenStoreError("EINVAL") from None
                # 0 switches the memory quota off, as in xenstored
                if val < (0 if name == "memory" else 1):
                    raise XenStoreError("EINVAL")
                table[name] = val
                return "OK"
            if len(rest) != 1 or cmd != "quota":
                raise XenStoreError("EINVAL")
            domid = self._domid(rest[0])
            conns = self._by_domid.get(domid, ())
            usage = {
                "nodes": self.node_count.get(domid, 0),
                "watches": sum(len(c.watches) for c in conns),
                "transactions": sum(len(c.transactions) for c in conns),
                "outstanding": sum(c.events_pending for c in conns),
                "memory": self.domain_memory(domid),
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
                    "quota-soft      [set <name> <val>]\n"
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
        mem: Counter = Counter()
        for path, node in self.nodes.items():
            mem[node.perms[0][1]] += _cost(path, node)
            if node.childlen != sum(len(c) + 1 for c in node.children):
                problems.append(f"{path}: child length {node.childlen} is wrong")
        if +mem != +self.node_mem:
            problems.append(f"node memory {dict(self.node_mem)} != {dict(+mem)}")
        for c in self.clients:
            if c.watch_mem != sum(len(w.path) + len(w.token) for w in c.watches):
                problems.append(f"{c!r}: watch memory {c.watch_mem} is wrong")
        return problems

    def _load_node(self, path: str, value: bytes, perms: tuple) -> None:
        """Add a node while building a store (no checks, no watches; call
        :meth:`_recount_memory` when done)."""
        node = self.nodes.get(path)
        if node is not None:
            node.value = value
            self.node_count[node.perms[0][1]] -= 1
            node.perms = perms
            self.node_count[perms[0][1]] += 1
            self._bump(node)
            return
        if path != "/":
            self.nodes[_parent(path)].add_child(_basename(path))
        node = _Node(value, perms, [])
        self._bump(node)
        self.nodes[path] = node
        self.node_count[perms[0][1]] += 1

    def _recount_memory(self) -> None:
        self.node_count = +self.node_count
        mem: Counter = Counter()
        for path, node in self.nodes.items():
            mem[node.perms[0][1]] += _cost(path, node)
        self.node_mem = +mem

    # ------------------------------------------------------ persistence

    def apply_record(self, rec) -> None:
        """Replay one journal record (as appended to :attr:`journal`) while
        loading a state: ``("P", path, value, perms)`` creates or updates a
        node (a new one goes last among its parent's children), ``("D",
        path)`` removes a subtree, ``("O", path, children)`` sets the order
        of children, ``("S", name, perms)`` the permissions of a special
        node, ``("W+", domid, path, token, relative, prefix_len, depth)`` /
        ``("W-", domid, path, token)`` / ``("W0", domid)`` change a guest's
        saved watches.  Call :meth:`_recount_memory` when done."""
        op = rec[0]
        if op == "P":
            _, path, value, perms = rec
            if path != "/" and _parent(path) not in self.nodes:
                # never written so (parents come first); keep going anyway
                self.apply_record(("P", _parent(path), b"", perms))
            self._load_node(path, bytes(value), tuple(perms))
        elif op == "D":
            path = rec[1]
            if path == "/" or path not in self.nodes:
                return
            self.nodes[_parent(path)].remove_child(_basename(path))
            stack = [path]
            while stack:
                p = stack.pop()
                node = self.nodes.pop(p, None)
                if node is None:
                    continue
                self.node_count[node.perms[0][1]] -= 1
                stack.extend(_join(p, c) for c in node.children)
        elif op == "O":
            _, path, children = rec
            node = self.nodes.get(path)
            if node is not None:
                order = [c for c in children if c in node.children]
                listed = set(order)
                order += [c for c in node.children if c not in listed]
                node.set_children(order)
        elif op == "S":
            _, name, perms = rec
            if name in self.special:
                self.special[name].perms = tuple(perms)
        elif op == "W+":
            _, domid, path, token, relative, prefix_len, depth = rec
            ws = self.saved_ring_watches.setdefault(domid, [])
            if not any(w.path == path and w.token == token for w in ws):
                ws.append(Watch(path, token, bool(relative), int(prefix_len), depth))
        elif op == "W-":
            _, domid, path, token = rec
            ws = self.saved_ring_watches.get(domid, [])
            ws[:] = [w for w in ws if not (w.path == path and w.token == token)]
        elif op == "W0":
            self.saved_ring_watches.pop(rec[1], None)
        else:
            raise ValueError(f"unknown journal record {op!r}")

    def ring_watch_state(self) -> dict:
        """Guests' watches to keep across a restart of the daemon: those of
        live ring connections and those loaded but not yet taken back."""
        out = {d: [[w.path, w.token, w.relative, w.prefix_len, w.depth] for w in ws]
               for d, ws in self.saved_ring_watches.items() if ws}
        for c in self.clients:
            if c.persist_watches and c.watches:
                out[c.domid] = [[w.path, w.token, w.relative, w.prefix_len, w.depth]
                                for w in c.watches]
        return {str(d): ws for d, ws in out.items()}

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
            "ring_watches": self.ring_watch_state(),
        }

    @classmethod
    def from_state(cls, state: dict, quotas: Optional[dict] = None,
                   soft_quotas: Optional[dict] = None) -> "XenStore":
        """Rebuild a store from :meth:`to_state` output."""
        if state.get("format") != "pyxen-xenstore" or state.get("version") != 1:
            raise ValueError("not a pyxen xenstore state")
        store = cls(quotas, initial=False, soft_quotas=soft_quotas)
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
        store._recount_memory()
        store.dirty = False
        return store
