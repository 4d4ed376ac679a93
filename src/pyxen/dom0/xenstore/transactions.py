"""Transactions, as C xenstored's xenstored_transaction.c.

Transactions are optimistic: every node read or written in a transaction
is remembered with its generation; the commit fails with EAGAIN if any of
them changed meanwhile.  As in Xen's C xenstored, a transaction keeps the
node as it first saw it (or its absence): changes made outside after that
do not show inside the transaction (they make its commit fail instead).
A transaction keeps one entry per node however often it is written, and
one pending watch event per node (C xenstored's accessed-node list).

:class:`TransactionTable` is also the way every operation reads and changes
nodes: through a transaction (``tx``) or, with ``tx=None``, the live tree.
"""
from __future__ import annotations

from collections import Counter
from typing import Callable, Optional

from .core import MISSING, Client, Node, Tree, XenStoreError, basename, join, node_cost, parent
from .domains import DomainTable

__all__ = ["Transaction", "TransactionTable"]


class Transaction:
    """An open transaction: private copies of modified nodes (``None`` for
    removed ones) over the live tree, plus what was read (as it was read).

    Everything here is bounded by the number of distinct nodes accessed
    (the transaction-nodes quota): a node written any number of times has
    one copy and at most one pending watch event, as with C xenstored."""

    __slots__ = ("id", "client", "overlay", "seen", "accessed", "events", "delta",
                 "mem", "touched", "failed")

    def __init__(self, tx_id: int, client: Client):
        self.id = tx_id
        self.client = client
        self.overlay: dict[str, Optional[Node]] = {}
        # copies of unmodified nodes as first read (None: absent then); live
        # nodes change in place, so a reference would not do
        self.seen: dict[str, Optional[Node]] = {}
        self.accessed: dict[str, Optional[int]] = {}   # path -> generation seen
        # watch events to fire at commit, one per node: path -> [exact,
        # perm sets of the first firing, perm sets of the last one]
        self.events: dict[str, list] = {}
        self.delta: Counter = Counter()                 # node count per owner
        self.mem = 0            # bytes of the copies held (overlay and seen)
        self.touched: dict[str, None] = {}   # overlay paths changed by this request
        self.failed = False     # a quota hit inside: the commit fails (ENOMEM)


class TransactionTable:
    """Opens, looks up and commits the clients' transactions (each client
    holds its own in ``client.transactions``), and reads and changes nodes
    through one.  ``domains`` gives the quotas and memory accounting;
    ``changed()`` is called for every change of the live tree."""

    def __init__(self, tree: Tree, domains: DomainTable, changed: Callable[[], None]):
        self.tree = tree
        self.domains = domains
        self._changed = changed
        #: transactions whose copies the running request changed
        self._touched: list[Transaction] = []

    # -------------------------------------------------------- lifecycle

    def start(self, client: Client) -> int:
        if len(client.transactions) >= self.domains.limit(client, "transactions"):
            raise XenStoreError("ENOSPC", "transaction quota exceeded")
        while True:
            tx_id = client.next_tx_id
            client.next_tx_id = (tx_id + 1) & 0xFFFFFFFF or 1
            if tx_id not in client.transactions:
                break
        client.transactions[tx_id] = Transaction(tx_id, client)
        return tx_id

    @staticmethod
    def lookup(client: Client, tx_id: int) -> Optional[Transaction]:
        """The client's open transaction ``tx_id`` (None for 0); ENOENT."""
        if not tx_id:
            return None
        tx = client.transactions.get(tx_id)
        if tx is None:
            raise XenStoreError("ENOENT", f"no transaction {tx_id}")
        return tx

    @staticmethod
    def end(client: Client, tx_id: int) -> Transaction:
        """Close the transaction (ENOENT if there is none)."""
        tx = client.transactions.pop(tx_id, None) if tx_id else None
        if tx is None:
            raise XenStoreError("ENOENT", f"no transaction {tx_id}")
        return tx

    def check_commit(self, tx: Transaction) -> None:
        """Can the closed ``tx`` be committed?  ENOMEM if it hit a quota
        inside (as C xenstored), EAGAIN if a node it accessed changed
        meanwhile, ENOSPC if it would take its domain over the node quota."""
        if tx.failed:
            raise XenStoreError("ENOMEM", "the transaction hit a quota")
        nodes = self.tree.nodes
        for path, gen in tx.accessed.items():
            cur = nodes.get(path)
            if (cur.generation if cur is not None else None) != gen:
                raise XenStoreError("EAGAIN", f"conflict on {path}")
        client = tx.client
        if not client.privileged:
            d = tx.delta[client.domid]
            if d > 0 and self.tree.node_count[client.domid] + d > self.domains.quotas["nodes"]:
                raise XenStoreError("ENOSPC", "node quota exceeded")

    def apply(self, tx: Transaction, journal: Optional[list]) -> None:
        """Make a checked transaction's changes live (their records go to
        ``journal`` if a list); its watch events are the caller's."""
        if not tx.overlay:
            return
        tree = self.tree
        if journal is not None:
            journal.extend(self.commit_records(tx))
        for path, node in tx.overlay.items():
            tree.touch(path, journal=False)
            if node is None:
                tree.nodes.pop(path, None)
            else:
                tree.bump(node)
                tree.nodes[path] = node
        for domid, d in tx.delta.items():
            tree.count_add(domid, d)
        self._changed()

    def commit_records(self, tx: Transaction) -> list:
        """Journal records that turn the live tree into the committed one
        when replayed (see :func:`.persist.replay`): removals, then new and
        changed nodes parents first, then the child order of every node
        whose children would otherwise come out in another order."""
        live = self.tree.nodes
        dels = [p for p, n in tx.overlay.items() if n is None and p in live]
        gone_roots = set(dels)

        def gone(path: str) -> bool:
            while True:
                if path in gone_roots:
                    return True
                if path == "/":
                    return False
                path = parent(path)

        puts = sorted((p for p, n in tx.overlay.items() if n is not None),
                      key=lambda p: 0 if p == "/" else p.count("/"))
        recs: list = [("D", p) for p in dels]
        appended: dict[str, list] = {}
        for p in puts:
            n = tx.overlay[p]
            recs.append(("P", p, n.value, n.perms))
            if p != "/" and (p not in live or gone(p)):
                appended.setdefault(parent(p), []).append(basename(p))
        for p in puts:
            final = tx.overlay[p].children
            old = live.get(p)
            if old is not None and not gone(p):
                predicted = [c for c in old.children if not gone(join(p, c))]
            else:
                predicted = []
            predicted += appended.get(p, ())
            if predicted != final:
                recs.append(("O", p, list(final)))
        return recs

    # ------------------------------------------- memory of the copies

    def _touch(self, tx: Transaction, path: str) -> None:
        if path not in tx.touched:
            node = tx.overlay.get(path)
            if node is not None:
                tx.mem -= node_cost(path, node)
            if not tx.touched:
                self._touched.append(tx)
            tx.touched[path] = None

    def settle(self) -> None:
        """The request is over: account the changed copies' memory again."""
        for tx in self._touched:
            for path in tx.touched:
                node = tx.overlay.get(path)
                if node is not None:
                    tx.mem += node_cost(path, node)
            tx.touched.clear()
        self._touched.clear()

    @staticmethod
    def _drop_seen(tx: Transaction, path: str) -> None:
        n = tx.seen.pop(path, None)
        if n is not None:
            tx.mem -= node_cost(path, n)

    # ------------------------------------------- nodes through a tx

    def _access(self, tx: Transaction, path: str, node: Optional[Node]) -> None:
        if path not in tx.accessed:
            if len(tx.accessed) >= self.domains.limit(tx.client, "transaction-nodes"):
                # as C xenstored: this request fails, and so will the commit
                tx.failed = True
                raise XenStoreError("ENOSPC", "too many nodes in transaction")
            tx.accessed[path] = node.generation if node is not None else None

    def get(self, tx: Optional[Transaction], path: str) -> Optional[Node]:
        """Read a node through the transaction (recording the access).
        Inside a transaction a node keeps the state it had when the
        transaction first touched it, as in C xenstored (test-xenstore's
        "ta err" reads a node in a transaction after a write outside it and
        expects the old value)."""
        if tx is None:
            return self.tree.nodes.get(path)
        n = tx.overlay.get(path, MISSING)
        if n is not MISSING:
            return n
        if tx.overlay and not self._visible(tx, path):
            return None
        n = tx.seen.get(path, MISSING)
        if n is not MISSING:
            return n
        n = self.tree.nodes.get(path)
        if n is not None:
            cost = node_cost(path, n)
            self.domains.check_memory(tx.client, cost, tx)
        self._access(tx, path, n)
        if n is not None:
            n = n.copy()
            tx.mem += cost
        tx.seen[path] = n
        return n

    @staticmethod
    def _visible(tx: Transaction, path: str) -> bool:
        """A live node is part of the transaction's view only if the
        nearest ancestor the transaction modified still lists it (when they
        disagree, something changed under the transaction, whose commit
        will fail with EAGAIN anyway)."""
        child = path
        while child != "/":
            p = parent(child)
            o = tx.overlay.get(p, MISSING)
            if o is not MISSING:
                return o is not None and basename(child) in o.children
            child = p
        return True

    def peek(self, tx: Optional[Transaction], path: str) -> Optional[Node]:
        """Like :meth:`get` but not recorded (for permission checks)."""
        if tx is not None:
            n = tx.overlay.get(path, MISSING)
            if n is not MISSING:
                return n
            if tx.overlay and not self._visible(tx, path):
                return None
            n = tx.seen.get(path, MISSING)
            if n is not MISSING:
                return n
        return self.tree.nodes.get(path)

    def writable(self, tx: Optional[Transaction], path: str) -> Node:
        """An existing node, ready to be modified in place."""
        if tx is None:
            self.tree.touch(path)
            n = self.tree.nodes[path]
            self.tree.bump(n)
            self._changed()
            return n
        n = tx.overlay.get(path, MISSING)
        if n is MISSING:
            n = self.get(tx, path)
            if n is not None:
                # the private copy made when it was read becomes the
                # transaction's version of the node
                del tx.seen[path]
                tx.mem -= node_cost(path, n)
                self._touch(tx, path)
                tx.overlay[path] = n
        else:
            self._touch(tx, path)
        if n is None:
            # only a parent can be missing here: the transaction holds a
            # child it read before the parent went away outside (C
            # xenstored answers EINVAL too; the commit would fail anyway)
            raise XenStoreError("EINVAL", f"{path} is gone in this transaction")
        self.tree.bump(n)
        return n

    def insert(self, tx: Optional[Transaction], path: str, node: Node) -> None:
        self.tree.bump(node)
        self._put(tx, path, node)

    def delete(self, tx: Optional[Transaction], path: str) -> None:
        self._put(tx, path, None)

    def _put(self, tx: Optional[Transaction], path: str, node: Optional[Node]) -> None:
        """Set (node) or remove (None) path, in the live tree or the transaction."""
        if tx is None:
            self.tree.touch(path)
            if node is None:
                del self.tree.nodes[path]
            else:
                self.tree.nodes[path] = node
            self._changed()
        else:
            if path not in tx.overlay:
                self._access(tx, path, self.tree.nodes.get(path))
                self._drop_seen(tx, path)
            self._touch(tx, path)
            tx.overlay[path] = node

    def count(self, tx: Optional[Transaction], domid: int) -> int:
        """Nodes ``domid`` owns, as the transaction sees it."""
        return self.tree.node_count[domid] + (tx.delta[domid] if tx is not None else 0)

    def count_add(self, tx: Optional[Transaction], domid: int, n: int) -> None:
        if tx is None:
            self.tree.count_add(domid, n)
        else:
            tx.delta[domid] += n
