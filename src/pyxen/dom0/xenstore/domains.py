"""Per-domain state of the xenstore, as C xenstored's xenstored_domain.c:
which domains are introduced (:class:`XsDomain`), their connections, the
quotas and what each domain is accounted for (nodes, memory).

Quotas apply to unprivileged clients only (dom0 is exempt, as in Xen),
with Xen 4.17's defaults and C xenstored's errors; privileged clients have
generous safety caps (:data:`PRIVILEGED_LIMITS`) on watches and
transactions.  A domain's memory counts the nodes it owns (path + record),
its connections' watches, queued replies and events, and the nodes its
transactions hold (:meth:`DomainTable.memory`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from .core import REL_PATH_MAX, Client, Tree, XenStoreError

if TYPE_CHECKING:
    from .transactions import Transaction

__all__ = [
    "XsDomain", "DomainTable", "DEFAULT_QUOTAS", "DEFAULT_SOFT_QUOTAS",
    "QUOTA_DESCRIPTIONS", "SOFT_QUOTA_DESCRIPTIONS", "QUOTA_ALIASES",
    "PRIVILEGED_LIMITS", "parse_domid",
]

log = logging.getLogger("pyxen.xenstored")

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
#: at most one "below the quota again" / soft-quota message per domain this
#: often (seconds), like xenstored
_MEM_WARN_INTERVAL = 5.0



def parse_domid(value) -> int:
    """A domid as sent by a client; EINVAL unless 0..0xFFFF."""
    try:
        domid = int(value)
    except (TypeError, ValueError):
        raise XenStoreError("EINVAL", f"bad domid {value!r}") from None
    if not 0 <= domid <= 0xFFFF:
        raise XenStoreError("EINVAL", f"bad domid {value!r}")
    return domid


@dataclass
class XsDomain:
    """What the store knows of a domain (C xenstored's struct domain)."""
    domid: int
    introduced: bool = False
    gfn: int = 0
    evtchn: int = 0
    shutdown: bool = False
    target: Optional[int] = None


class DomainTable:
    """The domains, their connections and quotas.  Node counts and node
    memory per domain are the :class:`~.core.Tree`'s (``tree``); a domain's
    memory adds its connections' watches, queued output and transactions."""

    def __init__(self, tree: Tree, quotas: Optional[dict] = None,
                 soft_quotas: Optional[dict] = None):
        self.tree = tree
        self.domains: dict[int, XsDomain] = {}
        #: each domain's connections
        self.connections: dict[int, list[Client]] = {}
        self.quotas = dict(DEFAULT_QUOTAS)
        self.soft_quotas = dict(DEFAULT_SOFT_QUOTAS)
        for table, given in ((self.quotas, quotas), (self.soft_quotas, soft_quotas)):
            for k, v in (given or {}).items():
                k = QUOTA_ALIASES.get(k, k)
                if k not in table:
                    raise ValueError(f"unknown quota {k!r}")
                table[k] = int(v)
        #: domains over their soft / hard memory quota (logged once)
        self._mem_warned: dict[int, tuple[str, float]] = {}

    # ------------------------------------------------------ connections

    def add_connection(self, client: Client) -> None:
        self.connections.setdefault(client.domid, []).append(client)

    def remove_connection(self, client: Client) -> None:
        peers = self.connections.get(client.domid)
        if peers is not None and client in peers:
            peers.remove(client)
            if not peers:
                del self.connections[client.domid]

    # ---------------------------------------------------------- domains

    def get(self, domid: int) -> Optional[XsDomain]:
        return self.domains.get(domid)

    def ensure(self, domid: int) -> XsDomain:
        d = self.domains.get(domid)
        if d is None:
            d = self.domains[domid] = XsDomain(domid)
        return d

    def connected(self, domid: int) -> XsDomain:
        """An introduced domain; ENOENT otherwise."""
        d = self.domains.get(domid)
        if d is None or not d.introduced:
            raise XenStoreError("ENOENT", f"domain {domid} not introduced")
        return d

    def is_introduced(self, domid: int) -> bool:
        d = self.domains.get(domid)
        return d is not None and d.introduced

    def forget(self, domid: int) -> Optional[XsDomain]:
        """The domain is gone: drop it, and every SET_TARGET naming it."""
        d = self.domains.pop(domid, None)
        for other in self.domains.values():
            if other.target == domid:
                other.target = None
        return d

    def target_of(self, domid: int) -> Optional[int]:
        d = self.domains.get(domid)
        return d.target if d is not None else None

    # ----------------------------------------------------------- quotas

    def limit(self, client: Client, name: str) -> int:
        """The quota ``name`` for this client (a safety cap if privileged)."""
        if client.privileged:
            return PRIVILEGED_LIMITS.get(name, 1 << 62)
        return self.quotas[name]

    def check_size(self, client: Client, size: int) -> None:
        # C xenstored refuses a record of node-size bytes or more
        if not client.privileged and size >= self.quotas["node-size"]:
            raise XenStoreError("ENOSPC", "node too big")

    def memory(self, domid: int) -> int:
        """Bytes accounted to a domain: nodes it owns, and its connections'
        watches, queued output and transactions."""
        total = self.tree.node_mem.get(domid, 0)
        for c in self.connections.get(domid, ()):
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
        mem = self.memory(domid) + extra
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

    def forget_memory_warning(self, domid: int) -> None:
        self._mem_warned.pop(domid, None)

    def check_memory(self, client: Client, extra: int,
                     tx: Optional["Transaction"] = None) -> None:
        """ENOMEM if ``extra`` bytes take an unprivileged client's domain to
        its hard memory quota (and a transaction then fails at commit)."""
        if not client.privileged and self.over_memory_quota(client.domid, extra):
            if tx is not None:
                tx.failed = True
            raise XenStoreError("ENOMEM", "memory quota exceeded")

    # ---------------------------------------------------------- control

    def control_quota(self, cmd: str, rest: list[str]) -> str:
        """CONTROL ``quota`` / ``quota-soft``: list, ``set NAME N``, or (hard
        quotas only) a domain's usage."""
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
        domid = parse_domid(rest[0])
        conns = self.connections.get(domid, ())
        usage = {
            "nodes": self.tree.node_count.get(domid, 0),
            "watches": sum(len(c.watches) for c in conns),
            "transactions": sum(len(c.transactions) for c in conns),
            "outstanding": sum(c.events_pending for c in conns),
            "memory": self.memory(domid),
        }
        lines = [f"Domain {domid}:"]
        for k, v in usage.items():
            lines.append(f"{k:<17}: {v:8d} (max {self.quotas[k]:8d})")
        return "\n".join(lines) + "\n"
