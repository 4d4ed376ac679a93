"""The core of the xenstore data model, as C xenstored's xenstored_core.c:
the node tree, its paths and permissions, and a connection (:class:`Client`).
No I/O happens here.

A node has a value (bytes), an ordered list of child names, a permission
list and a generation count.  Permissions are ``(char, domid)`` pairs with
the char one of ``n`` (none), ``r`` (read), ``w`` (write), ``b`` (both): the
first pair names the owner (who can always read, write and change the
permissions) and gives the access of every domain not listed afterwards
(:func:`perm_bits`).

:class:`Tree` holds the live nodes, the special ``@`` nodes, the generation
counter and what each domain owns (node count and memory, kept up to date
at the end of every request by :meth:`Tree.touch` / :meth:`Tree.settle`).
The operations themselves (which combine the tree with transactions,
watches and quotas) are :class:`.store.XenStore`'s.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import TYPE_CHECKING, Callable, Iterator, Optional

from ...hv.abi import (DOMID_FIRST_RESERVED, DOMID_SELF, XENSTORE_ABS_PATH_MAX,  # noqa: F401
                       XENSTORE_PAYLOAD_MAX, XENSTORE_REL_PATH_MAX, XSD_ERRORS)

if TYPE_CHECKING:
    from .store import XenStore
    from .transactions import Transaction
    from .watches import Watch

__all__ = [
    "ERRORS", "XenStoreError", "Perm", "parse_perm", "format_perm", "check_perm",
    "perm_bits", "canonical_path", "Node", "node_cost", "Client", "Tree",
    "PAYLOAD_MAX", "ABS_PATH_MAX", "REL_PATH_MAX", "DOMID_SELF",
    "DOMID_FIRST_RESERVED", "SPECIAL_PATHS", "INITIAL_PATHS",
    "PERM_READ", "PERM_WRITE", "PERM_OWNER", "PERM_BITS", "NODE_HEADER", "PERM_SIZE",
    "VALID_PATH", "MISSING", "parent", "basename", "join", "is_child", "levels_below",
]

#: errno names a reply may carry, in xs_wire.h's xsd_errors order.
ERRORS = XSD_ERRORS

PAYLOAD_MAX = XENSTORE_PAYLOAD_MAX
ABS_PATH_MAX = XENSTORE_ABS_PATH_MAX
REL_PATH_MAX = XENSTORE_REL_PATH_MAX

SPECIAL_PATHS = ("@introduceDomain", "@releaseDomain")
#: nodes present in a fresh store (all owned by dom0, no access for others)
INITIAL_PATHS = ("/", "/local", "/local/domain", "/tool", "/tool/xenstored",
                 "/vm")

#: bytes C xenstored accounts for a node record besides its data
#: (struct xs_tdb_record_hdr) and for each permission entry
NODE_HEADER = 24
PERM_SIZE = 8
PERM_READ = 1
PERM_WRITE = 2
PERM_OWNER = 4
PERM_BITS = {"n": 0, "r": PERM_READ, "w": PERM_WRITE, "b": PERM_READ | PERM_WRITE}

VALID_PATH = re.compile(r"[A-Za-z0-9\-/_@]+\Z")
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


def check_perm(p) -> Perm:
    if isinstance(p, str):
        return parse_perm(p)
    try:
        ch, domid = p
    except (TypeError, ValueError):
        raise XenStoreError("EINVAL", f"bad permission {p!r}") from None
    if ch not in PERM_BITS or not isinstance(domid, int) or not 0 <= domid <= 0xFFFF:
        raise XenStoreError("EINVAL", f"bad permission {p!r}")
    return (ch, domid)


def parent(path: str) -> str:
    i = path.rfind("/")
    return "/" if i <= 0 else path[:i]


def basename(path: str) -> str:
    return path[path.rfind("/") + 1:]


def join(parent: str, child: str) -> str:
    return "/" + child if parent == "/" else f"{parent}/{child}"


def is_child(name: str, watched: str) -> bool:
    """Is ``name`` ``watched`` itself or below it?"""
    if name == watched:
        return True
    if name[0] == "@" or watched[0] == "@":
        return name.startswith(watched + "/")
    if watched == "/":
        return True
    return name.startswith(watched) and name[len(watched)] == "/"


def levels_below(name: str, watched: str) -> int:
    if name == watched:
        return 0
    rest = name[len(watched):] if watched != "/" else name
    return rest.count("/")


class Node:
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

    def copy(self) -> "Node":
        return Node(self.value, self.perms, list(self.children), self.generation,
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


def node_cost(path: str, node: Node) -> int:
    """Memory a node is accounted for (key + record, as C xenstored)."""
    return len(path) + node.size()


MISSING = object()


def perm_bits(perms: tuple, domid: int, target: Optional[int]) -> int:
    """The access (PERM_* bits) an unprivileged ``domid`` has to a node with
    ``perms``: full on nodes it (or its SET_TARGET ``target``) owns,
    otherwise the first entry naming it (or its target), else the owner
    entry's access char."""
    owner = perms[0][1]
    if owner == domid or (target is not None and owner == target):
        return PERM_READ | PERM_WRITE | PERM_OWNER
    for ch, d in perms[1:]:
        if d == domid or (target is not None and d == target):
            return PERM_BITS[ch]
    return PERM_BITS[perms[0][0]]


def canonical_path(client: "Client", path, path_max: int,
                   allow_special: bool = False) -> str:
    """The absolute (or @special) form of a path a client sent; EINVAL for
    a malformed one or one too long (``path_max``: the path-max quota,
    counted below ``/local/domain/N/``, for unprivileged clients)."""
    if not isinstance(path, str) or not path or not VALID_PATH.match(path):
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
        if len(name) - (m.end() if m else 0) > path_max:
            raise XenStoreError("EINVAL", "path too long")
    return name


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


class Tree:
    """The live nodes.  ``node_count`` / ``node_mem``: nodes and bytes (see
    :func:`node_cost`) each domain owns.  A request changing live nodes
    calls :meth:`touch` before changing each one and :meth:`settle` at its
    end, which accounts their memory again and journals their new state."""

    def __init__(self):
        self.nodes: dict[str, Node] = {}
        self.special: dict[str, Node] = {
            name: Node(b"", (("n", 0),), []) for name in SPECIAL_PATHS}
        self.generation = 0
        self.node_count: Counter = Counter()
        #: bytes of the nodes each domain owns (see node_cost)
        self.node_mem: Counter = Counter()
        #: live paths changed by the running request (ordered): whether to
        #: journal their new state at its end
        self._touched: dict[str, bool] = {}

    def bump(self, node: Node) -> None:
        self.generation += 1
        node.generation = self.generation

    def count_add(self, domid: int, n: int) -> None:
        self.node_count[domid] += n
        if self.node_count[domid] == 0:
            del self.node_count[domid]

    def touch(self, path: str, journal: bool = True) -> None:
        """A live node (or its absence) at ``path`` is about to change;
        ``journal``: its new state is journalled at the end of the request
        (a commit journals its own records)."""
        if path not in self._touched:
            node = self.nodes.get(path)
            if node is not None:
                self.node_mem[node.perms[0][1]] -= node_cost(path, node)
            self._touched[path] = journal

    def settle(self, journal: Optional[list]) -> None:
        """The request is over: account the touched nodes' memory again and
        append their new state to ``journal`` (if a list), in the order they
        were first touched."""
        if not self._touched:
            return
        for path, journal_it in self._touched.items():
            node = self.nodes.get(path)
            if node is not None:
                self.node_mem[node.perms[0][1]] += node_cost(path, node)
                if journal is not None and journal_it:
                    journal.append(("P", path, node.value, node.perms))
            elif journal is not None and journal_it:
                journal.append(("D", path))
        self._touched.clear()
        self.node_mem = +self.node_mem

    def owned_roots(self, domid: int) -> list[str]:
        """The topmost nodes ``domid`` owns (never "/")."""
        if not self.node_count.get(domid):
            return []
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
            stack.extend(join(path, c) for c in node.children)
        return roots

    def walk(self, path: str = "/") -> Iterator[tuple[str, bytes, tuple]]:
        """(path, value, perms) of the subtree, parents first, children in
        order.  No permission checks."""
        stack = [path]
        while stack:
            p = stack.pop()
            n = self.nodes.get(p)
            if n is None:
                continue
            yield p, n.value, n.perms
            stack.extend(join(p, c) for c in reversed(n.children))

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
                if join(path, c) not in self.nodes:
                    problems.append(f"{path}: missing child {c}")
        counts = +counts
        if counts != +self.node_count:
            problems.append(f"node counts {dict(self.node_count)} != {dict(counts)}")
        mem: Counter = Counter()
        for path, node in self.nodes.items():
            mem[node.perms[0][1]] += node_cost(path, node)
            if node.childlen != sum(len(c) + 1 for c in node.children):
                problems.append(f"{path}: child length {node.childlen} is wrong")
        if +mem != +self.node_mem:
            problems.append(f"node memory {dict(self.node_mem)} != {dict(+mem)}")
        return problems

    # ----------------------------------------------- building / replay

    def load_node(self, path: str, value: bytes, perms: tuple) -> None:
        """Add or update a node while building a tree (no checks, no
        watches; call :meth:`recount_memory` when done)."""
        node = self.nodes.get(path)
        if node is not None:
            node.value = value
            self.node_count[node.perms[0][1]] -= 1
            node.perms = perms
            self.node_count[perms[0][1]] += 1
            self.bump(node)
            return
        if path != "/":
            self.nodes[parent(path)].add_child(basename(path))
        node = Node(value, perms, [])
        self.bump(node)
        self.nodes[path] = node
        self.node_count[perms[0][1]] += 1

    def recount_memory(self) -> None:
        self.node_count = +self.node_count
        mem: Counter = Counter()
        for path, node in self.nodes.items():
            mem[node.perms[0][1]] += node_cost(path, node)
        self.node_mem = +mem

    def apply_record(self, rec) -> None:
        """Replay a node record of the journal: ``("P", path, value,
        perms)``, ``("D", path)``, ``("O", path, children)`` or ``("S",
        name, perms)`` (see :meth:`.store.XenStore.apply_record`)."""
        op = rec[0]
        if op == "P":
            _, path, value, perms = rec
            if path != "/" and parent(path) not in self.nodes:
                # never written so (parents come first); keep going anyway
                self.apply_record(("P", parent(path), b"", perms))
            self.load_node(path, bytes(value), tuple(perms))
        elif op == "D":
            path = rec[1]
            if path == "/" or path not in self.nodes:
                return
            self.nodes[parent(path)].remove_child(basename(path))
            stack = [path]
            while stack:
                p = stack.pop()
                node = self.nodes.pop(p, None)
                if node is None:
                    continue
                self.node_count[node.perms[0][1]] -= 1
                stack.extend(join(p, c) for c in node.children)
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
        else:
            raise ValueError(f"unknown journal record {op!r}")
