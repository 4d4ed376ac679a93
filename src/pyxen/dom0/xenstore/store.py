"""The xenstore: every operation of the xenstore protocol, on parts split
as C xenstored's sources are.  No I/O happens here.

* :mod:`.core`         -- the node tree (:class:`~.core.Tree`), paths,
  permissions, a connection (:class:`~.core.Client`), errors.
* :mod:`.transactions` -- :class:`~.transactions.TransactionTable`: open,
  commit, and reading / changing nodes through a transaction.
* :mod:`.watches`      -- :class:`~.watches.WatchTable`: registration and
  firing of watch events.
* :mod:`.domains`      -- :class:`~.domains.DomainTable`: introduced
  domains, their connections, quotas and memory accounting.
* this module          -- :class:`XenStore`, which owns one of each and
  performs the operations (C xenstored's ``do_*`` functions), CONTROL, and
  the snapshot of the state (written by :mod:`.persist`).

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
* Watches: see :mod:`.watches`; transactions: see :mod:`.transactions`.
* Quotas (per domain, only for unprivileged clients; dom0 is exempt, as
  in Xen), with Xen 4.17's defaults and C xenstored's errors: nodes owned
  (1000, ENOSPC), node size (2048 bytes as C xenstored counts a record,
  ENOSPC), permissions per node (5, ENOSPC), path length (2048 below the
  domain's home, EINVAL), watches (128, E2BIG), transactions (10, ENOSPC),
  nodes accessed per transaction (1024, ENOSPC, and the transaction then
  fails at commit with ENOMEM), memory (2.5 MB hard: ENOMEM, the ring is
  not read and watch events to the domain are dropped; 2 MB soft: a
  warning); see :mod:`.domains`.  Outstanding requests (20) are limited by
  the transports.
* Persistence: with ``journal`` set to a list, every change to the tree
  appends records describing the new state of the nodes it touched (see
  :mod:`.persist`); the store itself does no I/O.
"""
from __future__ import annotations

import base64
import logging
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Optional

from .core import (
    ABS_PATH_MAX, DOMID_FIRST_RESERVED, DOMID_SELF, ERRORS, INITIAL_PATHS,
    PAYLOAD_MAX, PERM_OWNER, PERM_READ, PERM_SIZE, PERM_WRITE, REL_PATH_MAX,
    SPECIAL_PATHS, VALID_PATH, Client, Node, Perm, Tree, XenStoreError, basename,
    canonical_path, check_perm, format_perm, join, node_cost, parent, parse_perm,
    perm_bits)
from .domains import (
    DEFAULT_QUOTAS, DEFAULT_SOFT_QUOTAS, PRIVILEGED_LIMITS, QUOTA_ALIASES,
    QUOTA_DESCRIPTIONS, SOFT_QUOTA_DESCRIPTIONS, DomainTable, XsDomain, parse_domid)
from .transactions import Transaction, TransactionTable
from .watches import Watch, WatchTable

__all__ = [
    "ERRORS",
    "XenStoreError",
    "Perm",
    "parse_perm",
    "format_perm",
    "Watch",
    "Transaction",
    "Client",
    "XsDomain",
    "XenStore",
    "DEFAULT_QUOTAS",
    "DEFAULT_SOFT_QUOTAS",
    "QUOTA_ALIASES",
    "QUOTA_DESCRIPTIONS",
    "SOFT_QUOTA_DESCRIPTIONS",
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


class XenStore:
    """The store: a :class:`~.core.Tree`, a
    :class:`~.transactions.TransactionTable`, a :class:`~.watches.WatchTable`
    and a :class:`~.domains.DomainTable`, and the operations on them.  See
    the module docstring for the rules enforced."""

    def __init__(self, quotas: Optional[dict] = None, *, initial: bool = True,
                 soft_quotas: Optional[dict] = None):
        self.tree = Tree()
        #: the connections
        self.clients: list[Client] = []
        self.domains = DomainTable(self.tree, quotas, soft_quotas)
        self.txs = TransactionTable(self.tree, self.domains, self._changed)
        self.watches = WatchTable(self.tree, self.clients, self._perm_for, self._record)
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
        #: the client whose request is being served (set by the transport):
        #: the watch events it causes count as its outstanding requests
        self.origin: Optional[Client] = None
        #: hooks for the server: on_introduce(domid, gfn, evtchn, first),
        #: on_release(domid)
        self.on_introduce: Optional[Callable[[int, int, int, bool], None]] = None
        self.on_release: Optional[Callable[[int], None]] = None
        self.on_change: Optional[Callable[[], None]] = None
        if initial:
            for path in INITIAL_PATHS:
                self.tree.load_node(path, b"", (("n", 0),))
            self.tree.recount_memory()
            self.dirty = False

    # the parts' state, as attributes of the store (for the transports,
    # persistence and tests)

    @property
    def nodes(self) -> dict[str, Node]:
        return self.tree.nodes

    @property
    def special(self) -> dict[str, Node]:
        return self.tree.special

    @property
    def generation(self) -> int:
        return self.tree.generation

    @property
    def node_count(self):
        return self.tree.node_count

    @property
    def node_mem(self):
        return self.tree.node_mem

    @property
    def quotas(self) -> dict:
        return self.domains.quotas

    @property
    def soft_quotas(self) -> dict:
        return self.domains.soft_quotas

    @property
    def saved_ring_watches(self) -> dict[int, list[Watch]]:
        return self.watches.saved

    # ----------------------------------------------------------- clients

    def new_client(self, domid: int = 0, privileged: Optional[bool] = None,
                   sink: Optional[Callable[[str, str], None]] = None) -> Client:
        if privileged is None:
            privileged = domid == 0
        c = Client(self, domid, privileged, sink)
        self.clients.append(c)
        self.domains.add_connection(c)
        return c

    def remove_client(self, client: Client) -> None:
        with self._mutation():
            self.watches.clear(client)
            client.transactions.clear()
            client.closed = True
            try:
                self.clients.remove(client)
            except ValueError:
                pass
            self.domains.remove_connection(client)

    # ------------------------------------------------------- internals

    def _changed(self) -> None:
        self.dirty = True
        self.change_count += 1
        if self.on_change is not None:
            self.on_change()

    def _record(self, rec: tuple) -> None:
        if self.journal is not None:
            self.journal.append(rec)

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
                self.op_seq += 1
                self.tree.settle(self.journal)
                self.txs.settle()

    def current_lsn(self) -> int:
        """The sequence number a reply or event queued now depends on: the
        journal up to the end of the running request (if any)."""
        return self.op_seq + (1 if self._op_depth else 0)

    def domain_memory(self, domid: int) -> int:
        """Bytes accounted to a domain (see :meth:`.DomainTable.memory`)."""
        return self.domains.memory(domid)

    def over_memory_quota(self, domid: int, extra: int = 0) -> bool:
        """Would ``extra`` more bytes take the domain to its hard memory
        quota?  (See :meth:`.DomainTable.over_memory_quota`.)"""
        return self.domains.over_memory_quota(domid, extra)

    def _perm_for(self, client: Client, perms: tuple) -> int:
        if client.privileged:
            return PERM_READ | PERM_WRITE | PERM_OWNER
        return perm_bits(perms, client.domid, self.domains.target_of(client.domid))

    def _canon(self, client: Client, path, allow_special: bool = False) -> str:
        return canonical_path(client, path, self.domains.quotas["path-max"], allow_special)

    def _lookup(self, client: Client, tx: Optional[Transaction], path,
                perm: int, allow_special: bool = False) -> tuple[str, Node]:
        name = self._canon(client, path, allow_special)
        if name[0] == "@":
            node = self.tree.special.get(name)
        else:
            node = self.txs.get(tx, name)
        if node is not None:
            if (self._perm_for(client, node.perms) & perm) != perm:
                raise XenStoreError("EACCES", name)
            return name, node
        raise XenStoreError(self._missing_error(client, tx, name, perm), name)

    def _missing_error(self, client: Client, tx: Optional[Transaction],
                       name: str, perm: int) -> str:
        p = name
        while p != "/":
            p = parent(p)
            n = self.txs.peek(tx, p)
            if n is not None:
                return "ENOENT" if self._perm_for(client, n.perms) & perm else "EACCES"
        return "EACCES"

    def _parent_perms(self, tx: Optional[Transaction], name: str):
        if name == "/" or name[0] == "@":
            return None
        p = self.txs.peek(tx, parent(name))
        return p.perms if p is not None else None

    # ------------------------------------------------- node operations

    def read(self, client: Client, path: str, tx_id: int = 0) -> bytes:
        """READ: the node's value."""
        tx = self.txs.lookup(client, tx_id)
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
        tx = self.txs.lookup(client, tx_id)
        with self._mutation():
            try:
                name, node = self._lookup(client, tx, path, PERM_WRITE)
            except XenStoreError as e:
                if e.name != "ENOENT":
                    raise
                name = self._canon(client, path)
                node = self._create(client, tx, name, value)
            else:
                self.domains.check_size(
                    client, node.size() - len(node.value) + len(value))
                if tx is not None and name not in tx.overlay:
                    grow = node_cost(name, node) - len(node.value) + len(value)
                else:
                    grow = len(value) - len(node.value)
                if grow > 0:
                    self.domains.check_memory(client, grow, tx)
                node = self.txs.writable(tx, name)
                node.value = value
            self.watches.fire(tx, name, False, (node.perms, self._parent_perms(tx, name)))

    def mkdir(self, client: Client, path: str, tx_id: int = 0) -> None:
        """MKDIR: make sure the node exists (existing values untouched)."""
        tx = self.txs.lookup(client, tx_id)
        with self._mutation():
            try:
                self._lookup(client, tx, path, PERM_WRITE)
                return
            except XenStoreError as e:
                if e.name != "ENOENT":
                    raise
            name = self._canon(client, path)
            node = self._create(client, tx, name, b"")
            self.watches.fire(tx, name, False, (node.perms, self._parent_perms(tx, name)))

    def _create(self, client: Client, tx: Optional[Transaction], name: str,
                value: bytes) -> Node:
        txs, domains = self.txs, self.domains
        missing = [name]
        p = parent(name)
        pnode = txs.get(tx, p)
        while pnode is None:
            missing.append(p)
            p = parent(p)
            pnode = txs.get(tx, p)
        missing.reverse()
        perms = pnode.perms
        if not client.privileged:
            if txs.count(tx, client.domid) + len(missing) > domains.quotas["nodes"]:
                raise XenStoreError("ENOSPC", "node quota exceeded")
            perms = ((perms[0][0], client.domid),) + tuple(perms[1:])
        new = []
        for i, path in enumerate(missing):
            last = i == len(missing) - 1
            kids = [] if last else [basename(missing[i + 1])]
            new.append(Node(value if last else b"", perms, kids))
        if not client.privileged:
            first = basename(missing[0])
            domains.check_size(client, pnode.size() + len(first) + 1)
            for n in new:
                domains.check_size(client, n.size())
            grow = sum(node_cost(path, n) for path, n in zip(missing, new)) + len(first) + 1
            if tx is not None and p not in tx.overlay:
                grow += node_cost(p, pnode)
            domains.check_memory(client, grow, tx)
        pw = txs.writable(tx, p)
        pw.add_child(basename(missing[0]))
        for path, n in zip(missing, new):
            txs.insert(tx, path, n)
            txs.count_add(tx, n.perms[0][1], 1)
        return new[-1]

    def rm(self, client: Client, path: str, tx_id: int = 0) -> None:
        """RM: remove the node and its whole subtree."""
        tx = self.txs.lookup(client, tx_id)
        with self._mutation():
            try:
                name, _ = self._lookup(client, tx, path, PERM_WRITE)
            except XenStoreError as e:
                if e.name != "ENOENT":
                    raise
                name = self._canon(client, path)
                if self.txs.get(tx, parent(name)) is not None:
                    return
                raise
            if name == "/":
                raise XenStoreError("EINVAL", "cannot remove /")
            self._rm_tree(tx, name)

    def _subtree(self, tx: Optional[Transaction], name: str) -> list[tuple[str, Node, tuple]]:
        """(path, node, parent perms) for the subtree, children first."""
        get = self.txs.get
        out = []
        root = get(tx, name)
        pnode = get(tx, parent(name))
        stack = [(name, root, pnode.perms if pnode else None, False)]
        while stack:
            path, node, pperms, expanded = stack.pop()
            if expanded:
                out.append((path, node, pperms))
                continue
            stack.append((path, node, pperms, True))
            for child in reversed(node.children):
                cpath = join(path, child)
                cnode = get(tx, cpath)
                if cnode is not None:
                    stack.append((cpath, cnode, node.perms, False))
        return out

    def _rm_tree(self, tx: Optional[Transaction], name: str) -> None:
        doomed = self._subtree(tx, name)
        pw = self.txs.writable(tx, parent(name))
        pw.remove_child(basename(name))
        for path, node, pperms in doomed:
            self.txs.delete(tx, path)
            self.txs.count_add(tx, node.perms[0][1], -1)
        for path, node, pperms in doomed:
            self.watches.fire(tx, path, path != name, (node.perms, pperms))

    def directory(self, client: Client, path: str, tx_id: int = 0) -> list[str]:
        """DIRECTORY: names of the node's children."""
        tx = self.txs.lookup(client, tx_id)
        return list(self._lookup(client, tx, path, PERM_READ)[1].children)

    def directory_part(self, client: Client, path: str, offset: int,
                       tx_id: int = 0) -> bytes:
        """DIRECTORY_PART: the wire reply ``<gen>|<child>|*`` for the child
        list starting at byte ``offset``; an extra NUL ends the list."""
        tx = self.txs.lookup(client, tx_id)
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
        tx = self.txs.lookup(client, tx_id)
        return list(self._lookup(client, tx, path, PERM_READ, True)[1].perms)

    def set_perms(self, client: Client, path: str, perms: Iterable,
                  tx_id: int = 0) -> None:
        """SET_PERMS: owner (or privileged) only; only privileged clients
        may change the owner.  Entries may be tuples or strings like "r5"."""
        perms = tuple(check_perm(p) for p in perms)
        if not perms:
            raise XenStoreError("EINVAL", "no permissions")
        tx = self.txs.lookup(client, tx_id)
        if not client.privileged and len(perms) > self.domains.quotas["permissions"]:
            raise XenStoreError("ENOSPC", "too many permissions")
        with self._mutation():
            name, node = self._lookup(client, tx, path, PERM_WRITE | PERM_OWNER, True)
            if not client.privileged and perms[0][1] != node.perms[0][1]:
                raise XenStoreError("EPERM", "only dom0 can change the owner")
            self.domains.check_size(
                client, node.size() + PERM_SIZE * (len(perms) - len(node.perms)))
            old = node.perms
            if name[0] == "@":
                node.perms = perms
                self._changed()
                self._record(("S", name, perms))
                self.watches.deliver(name, False, (old, perms))
                return
            grow = PERM_SIZE * (len(perms) - len(old))
            if tx is not None and name not in tx.overlay:
                grow += node_cost(name, node)
            if grow > 0:
                self.domains.check_memory(client, grow, tx)
            w = self.txs.writable(tx, name)
            w.perms = perms
            if old[0][1] != perms[0][1]:
                self.txs.count_add(tx, old[0][1], -1)
                self.txs.count_add(tx, perms[0][1], 1)
            self.watches.fire(tx, name, False, (old, perms, self._parent_perms(tx, name)))

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
        if self.watches.find(client, name, token) is not None:
            raise XenStoreError("EEXIST", "watch exists")
        if len(client.watches) >= self.domains.limit(client, "watches"):
            # C xenstored's answer to a domain over its watch quota
            raise XenStoreError("E2BIG", "watch quota exceeded")
        self.domains.check_memory(client, len(name) + len(token))
        with self._mutation():
            w = Watch(name, token, relative,
                      len(client.implicit_path) + 1 if relative else 0, depth)
            if client.persist_watches:
                # a guest's watches survive a daemon restart
                self.dirty = True
            self.watches.add(client, w)
        return w

    def unwatch(self, client: Client, path: str, token: str) -> None:
        name = self._canon(client, path, allow_special=True)
        i = self.watches.find(client, name, token)
        if i is None:
            raise XenStoreError("ENOENT", "no such watch")
        with self._mutation():
            if client.persist_watches:
                self.dirty = True
            self.watches.remove(client, i)

    def reset_watches(self, client: Client) -> None:
        """RESET_WATCHES: drop all watches and transactions of the client."""
        with self._mutation():
            if client.persist_watches and client.watches:
                self.dirty = True
            self.watches.clear(client)
            client.transactions.clear()

    # ---------------------------------------------------- transactions

    def transaction_start(self, client: Client) -> int:
        return self.txs.start(client)

    def transaction_end(self, client: Client, tx_id: int, commit: bool) -> None:
        """Commit (EAGAIN on conflict) or abort the transaction.  A
        transaction that hit a quota inside fails with ENOMEM, as C
        xenstored's."""
        tx = self.txs.end(client, tx_id)
        if not commit:
            return
        self.txs.check_commit(tx)
        with self._mutation():
            self.txs.apply(tx, self.journal)
            self.watches.fire_transaction(tx)

    # --------------------------------------------------------- domains

    @staticmethod
    def _require_priv(client: Client) -> None:
        if not client.privileged:
            raise XenStoreError("EACCES", "privileged operation")

    def introduce(self, client: Client, domid, gfn, evtchn) -> None:
        """INTRODUCE: start talking to a domain (privileged)."""
        self._require_priv(client)
        domid = parse_domid(domid)
        try:
            gfn, evtchn = int(gfn), int(evtchn)
        except (TypeError, ValueError):
            raise XenStoreError("EINVAL", "bad gfn or event channel") from None
        if domid >= DOMID_FIRST_RESERVED or evtchn <= 0:
            raise XenStoreError("EINVAL", "bad domid or event channel")
        first = not self.domains.is_introduced(domid)
        if self.on_introduce is not None:
            try:
                self.on_introduce(domid, gfn, evtchn, first)
            except XenStoreError:
                raise
            except Exception as e:  # the transport could not be set up
                log.error("introduce of domain %d failed: %s", domid, e)
                raise XenStoreError("EINVAL", str(e)) from e
        d = self.domains.ensure(domid)
        if not first:
            # re-introduction resets the domain's connection
            for c in self.clients:
                if c.domid == domid and not c.privileged:
                    self.reset_watches(c)
        d.introduced, d.gfn, d.evtchn, d.shutdown = True, gfn, evtchn, False
        if first and domid != 0:
            self.watches.fire_special("@introduceDomain", domid)

    def mark_introduced(self, domid: int) -> None:
        """Record a domain as introduced without an INTRODUCE request (for
        transports attached directly by the hypervisor)."""
        d = self.domains.ensure(domid)
        if not d.introduced:
            d.introduced = True
            d.shutdown = False
            if domid != 0:
                self.watches.fire_special("@introduceDomain", domid)

    def release(self, client: Client, domid) -> None:
        """RELEASE: forget a domain, remove the nodes it owns, fire
        @releaseDomain (privileged)."""
        self._require_priv(client)
        domid = parse_domid(domid)
        if domid == 0:
            raise XenStoreError("EINVAL", "cannot release dom0")
        self.domains.connected(domid)
        self.domain_destroyed(domid)

    def domain_destroyed(self, domid: int) -> None:
        """The domain is gone: drop its connections' state, remove the
        nodes it owns (with their subtrees) and fire @releaseDomain."""
        with self._mutation():
            d = self.domains.forget(domid)
            self.watches.forget_saved(domid)
            for c in self.clients:
                if c.domid == domid and not c.privileged:
                    self.reset_watches(c)
            if self.on_release is not None:
                try:
                    self.on_release(domid)
                except Exception as e:  # keep the store consistent regardless
                    log.error("release hook for domain %d failed: %s", domid, e)
            for path in self.tree.owned_roots(domid):
                if path in self.tree.nodes:
                    self._rm_tree(None, path)
            if d is not None and d.introduced:
                self.watches.fire_special("@releaseDomain", domid)
        self.domains.forget_memory_warning(domid)

    def domain_shutdown(self, domid: int) -> None:
        """The hypervisor saw the domain shut down: fire @releaseDomain once
        (until RESUME)."""
        d = self.domains.get(domid)
        if d is not None and d.introduced and not d.shutdown:
            d.shutdown = True
            self.watches.fire_special("@releaseDomain", domid)

    def resume(self, client: Client, domid) -> None:
        self._require_priv(client)
        domid = parse_domid(domid)
        if domid == 0:
            raise XenStoreError("EINVAL", "cannot resume dom0")
        self.domains.connected(domid).shutdown = False

    def set_target(self, client: Client, domid, target) -> None:
        """SET_TARGET: ``domid`` gets the rights of ``target``."""
        self._require_priv(client)
        domid, target = parse_domid(domid), parse_domid(target)
        d = self.domains.connected(domid)
        self.domains.connected(target)
        d.target = target

    def get_domain_path(self, client: Client, domid) -> str:
        return f"/local/domain/{parse_domid(domid)}"

    def is_domain_introduced(self, client: Client, domid) -> bool:
        self._require_priv(client)
        domid = parse_domid(domid)
        if domid in (0, DOMID_SELF):
            return True
        return self.domains.is_introduced(domid)

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
            size = sum(len(p) + n.size() for p, n in self.tree.nodes.items())
            return (f"nodes: {len(self.tree.nodes)}\nbytes: {size}\n"
                    f"connections: {len(self.clients)}\nwatches: {watches}\n"
                    f"transactions: {txs}\n")
        if cmd in ("quota", "quota-soft"):
            return self.domains.control_quota(cmd, rest)
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
        return self.tree.walk(path)

    def check(self) -> list[str]:
        """Consistency problems of the store (empty when healthy)."""
        problems = self.tree.check()
        if problems == ["root missing"]:
            return problems
        return problems + self.watches.check()

    def _recount_memory(self) -> None:
        self.tree.recount_memory()

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
        if rec[0] in ("W+", "W-", "W0"):
            self.watches.apply_record(rec)
        else:
            self.tree.apply_record(rec)

    def ring_watch_state(self) -> dict:
        """Guests' watches to keep across a restart of the daemon."""
        return self.watches.state()

    def to_state(self) -> dict:
        """A JSON-able snapshot of nodes and permissions."""
        return {
            "format": "pyxen-xenstore",
            "version": 1,
            "generation": self.tree.generation,
            "nodes": [
                [p, base64.b64encode(v).decode("ascii"), [format_perm(x) for x in perms]]
                for p, v, perms in self.tree.walk("/")
            ],
            "special": {name: [format_perm(x) for x in n.perms]
                        for name, n in self.tree.special.items()},
            # guests' ring connections outlive a restart of the daemon (the
            # ring lives in guest memory), so their watches are kept too
            "ring_watches": self.watches.state(),
        }

    @classmethod
    def from_state(cls, state: dict, quotas: Optional[dict] = None,
                   soft_quotas: Optional[dict] = None) -> "XenStore":
        """Rebuild a store from :meth:`to_state` output."""
        if state.get("format") != "pyxen-xenstore" or state.get("version") != 1:
            raise ValueError("not a pyxen xenstore state")
        store = cls(quotas, initial=False, soft_quotas=soft_quotas)
        tree = store.tree
        for entry in state["nodes"]:
            path, value, perms = entry
            if not isinstance(path, str) or not (path == "/" or VALID_PATH.match(path)):
                raise ValueError(f"bad path in state: {path!r}")
            perms = tuple(parse_perm(p) for p in perms)
            if not perms:
                raise ValueError(f"no permissions for {path}")
            if path != "/" and parent(path) not in tree.nodes:
                raise ValueError(f"orphan node in state: {path}")
            tree.load_node(path, base64.b64decode(value, validate=True), perms)
        if "/" not in tree.nodes:
            raise ValueError("state has no root node")
        for name, perms in state.get("special", {}).items():
            if name in tree.special:
                tree.special[name].perms = tuple(parse_perm(p) for p in perms)
        tree.generation = max(tree.generation, int(state.get("generation", 0)))
        store.watches.load_state(state.get("ring_watches", {}))
        tree.recount_memory()
        store.dirty = False
        return store
