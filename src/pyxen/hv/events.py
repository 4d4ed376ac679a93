"""Event channels for one domain (Xen's common/event_channel.c): the port
table and its state machine (allocate, bind, close, send). What the guest
sees of an event is the ABI's, as Xen's evtchn_port_ops: `self.abi` is an
evtchn_2l.TwoLevel (event_2l.c) or, from the first EVTCHNOP_init_control
until EVTCHNOP_reset, an evtchn_fifo.Fifo (event_fifo.c); both implement
evtchn_ops.PortOps and are called with `self.lock` held.

Bits the guest also changes (pending/mask words, selectors, FIFO event
words) are updated with real atomic instructions (pyxen._atomic), because
the guest's vCPUs run at the same time as pyxen's threads.
"""
from __future__ import annotations

import heapq
import threading
from dataclasses import dataclass

from .. import _atomic as A
from .abi import EINVAL, ENOSPC, ENOENT, ESRCH, EEXIST, ENOSYS, EOPNOTSUPP  # noqa: F401
from .abi import NR_VIRQS, VIRQ_DEBUG, VIRQ_TIMER, VIRQ_XENOPROF, VIRQ_XENPMU
from .evtchn_ops import PortOps
from .evtchn_2l import TwoLevel
from .evtchn_fifo import Fifo, PRIORITY_DEFAULT
# the ABIs' constants, for those who know them from here
from .evtchn_2l import NR_2L, SHARED_PENDING_OFF, SHARED_MASK_OFF  # noqa: F401
from .evtchn_fifo import (NR_FIFO, FIFO_PENDING, FIFO_MASKED, FIFO_LINKED,  # noqa: F401
                          FIFO_BUSY, FIFO_LINK_MASK, FIFO_CONTROL_BLOCK_SIZE, FIFO_MAX_ARRAY_PAGES)

CLOSED, UNBOUND, INTERDOMAIN, PIRQ, VIRQ, IPI = 0, 1, 2, 3, 4, 5
#: xl's default max_event_channels (libxl: b_info->event_channels = 1023):
#: the highest port a domain may allocate (port 0 is never allocated)
DEFAULT_MAX_PORT = 1023
#: the VIRQs each vCPU binds for itself (Xen's virq_is_global() is false);
#: every other one is global: bound to vCPU 0, moved with EVTCHNOP_bind_vcpu
PER_VCPU_VIRQS = frozenset({VIRQ_TIMER, VIRQ_DEBUG, VIRQ_XENOPROF, VIRQ_XENPMU})


def virq_is_global(virq: int) -> bool:
    return virq not in PER_VCPU_VIRQS


@dataclass
class Channel:
    state: int = CLOSED
    vcpu: int = 0
    remote_dom: int = 0
    remote_port: int = 0
    virq: int = 0
    priority: int = PRIORITY_DEFAULT
    remote: object = None        # the other end when it lives outside this domain
    consumer: bool = False       # reserved for pyxen's own use (console, xenstore)
    fifo_pending: bool = False   # raised before its FIFO event word existed


class RemoteEnd:
    """The far end of an inter-domain channel that pyxen's dom0 services (or
    another domain process) hold. `notify()` is called when the guest sends;
    `bound()` (if given) once the port is bound to this end, `closed()` (if
    given) once the port no longer uses it (closed, reset, detached or
    taken over), so its owner can free what it holds."""

    def __init__(self, domid: int, notify, closed=None, bound=None):
        self.domid = domid
        self.notify = notify
        self.closed = closed
        self.bound = bound

    def release(self) -> None:
        fn, self.closed = self.closed, None
        if fn is not None:
            fn()


class EventChannels:
    def __init__(self, domain, max_port: int = DEFAULT_MAX_PORT):
        self.dom = domain
        self.max_port = max_port          # Xen's d->max_evtchn_port (xl: max_event_channels)
        self.ports: list[Channel] = [Channel()]
        # closed ports below len(ports), lowest first (Xen's get_free_port
        # gives the lowest free port); entries may be stale (checked on pop)
        self._free: list[int] = []
        self._in_free: set[int] = set()
        self.lock = threading.RLock()
        self.virq_ports: dict[tuple[int, int], int] = {}   # (vcpu, virq) -> port
        self.shared = 0                                    # host address of shared_info
        self.abi: PortOps = TwoLevel(self)                 # Xen's d->evtchn_port_ops

    @property
    def fifo(self) -> bool:
        """Whether the domain uses the FIFO ABI."""
        return isinstance(self.abi, Fifo)

    # --- allocation --------------------------------------------------------
    def limit(self) -> int:
        """One past the highest port that may be allocated: the ABI's size
        or max_event_channels, whichever is smaller (Xen's
        evtchn_allocate_port: port > max_evtchn_port or >= max_evtchns)."""
        return min(self.abi.max_ports, self.max_port + 1)

    def alloc(self) -> int:
        """The lowest free port, or -ENOSPC. A min-heap of closed ports and
        the end of the table: O(log n) per allocation, not a scan."""
        limit = self.limit()
        free = self._free
        while free and free[0] < limit:
            p = heapq.heappop(free)
            self._in_free.discard(p)
            if p < len(self.ports) and self.ports[p].state == CLOSED:
                self.ports[p] = Channel()
                return p
        # FIFO: a port may be bound before the guest's event array covers it
        # (Linux expands the array while it sets the port up), as in Xen
        if len(self.ports) >= limit:
            return -ENOSPC
        self.ports.append(Channel())
        return len(self.ports) - 1

    def _freed(self, port: int) -> None:
        """`port` became CLOSED: it may be allocated again."""
        if port not in self._in_free:
            self._in_free.add(port)
            heapq.heappush(self._free, port)

    def get(self, port: int) -> Channel | None:
        if 0 < port < len(self.ports) and self.ports[port].state != CLOSED:
            return self.ports[port]
        return None

    # --- raising ---------------------------------------------------------------
    def set_pending(self, port: int) -> None:
        """Raise a bound port (Xen's evtchn_port_set_pending). Lock held."""
        ch = self.ports[port]
        self.abi.set_pending(port, ch, self.dom.vcpus[ch.vcpu])

    def raise_port(self, port: int) -> None:
        """Make a port pending from outside the guest (a dom0 service, a timer)."""
        with self.lock:
            if self.get(port) is not None:
                self.set_pending(port)

    def mark_pending(self, vcpu) -> None:
        """evtchn_upcall_pending for `vcpu`, kicked if newly set (Xen's
        vcpu_mark_events_pending): what both ABIs do for a visible event."""
        if A.xchg8(vcpu.vcpu_info_addr, 1) == 0:
            vcpu.notify_event()

    def is_pending(self, port: int) -> bool:
        return self.abi.is_pending(port)

    def is_masked(self, port: int) -> bool:
        return self.abi.is_masked(port)

    def unmask(self, port: int) -> None:
        with self.lock:         # FIFO linking must not interleave with a raiser's
            ch = self.ports[port]
            self.abi.unmask(port, ch, self.dom.vcpus[ch.vcpu])

    def send(self, port: int) -> int:
        """EVTCHNOP_send from this domain's side."""
        with self.lock:
            ch = self.get(port)
            if ch is None:
                return -EINVAL
            if ch.state == INTERDOMAIN:
                if ch.remote is not None:
                    remote = ch.remote
                else:
                    self.set_pending(ch.remote_port)   # loopback to this domain
                    return 0
            elif ch.state == IPI:
                self.set_pending(port)
                return 0
            elif ch.state == UNBOUND:
                return 0
            else:
                return -EINVAL
        remote.notify()
        return 0

    def send_virq(self, virq: int, vcpu_id: int = 0) -> None:
        with self.lock:
            port = self.virq_ports.get((vcpu_id, virq))
            if port:
                self.set_pending(port)

    def virq_pending(self, virq: int, vcpu_id: int) -> bool:
        port = self.virq_ports.get((vcpu_id, virq))
        return bool(port) and self.is_pending(port)

    # --- binding ------------------------------------------------------------------
    def bind_virq(self, virq: int, vcpu: int) -> int:
        if virq >= NR_VIRQS:
            return -EINVAL
        if virq_is_global(virq) and vcpu != 0:
            return -EINVAL
        if vcpu >= len(self.dom.vcpus):
            return -ENOENT          # Xen: domain_vcpu() finds no such vCPU
        with self.lock:
            if (vcpu, virq) in self.virq_ports:
                return -EEXIST
            port = self.alloc()
            if port < 0:
                return port
            self.ports[port] = Channel(state=VIRQ, vcpu=vcpu, virq=virq)
            self.virq_ports[(vcpu, virq)] = port
            return port

    def bind_ipi(self, vcpu: int) -> int:
        if vcpu >= len(self.dom.vcpus):
            return -ENOENT
        with self.lock:
            port = self.alloc()
            if port >= 0:
                self.ports[port] = Channel(state=IPI, vcpu=vcpu)
            return port

    def alloc_unbound(self, remote_dom: int) -> int:
        with self.lock:
            port = self.alloc()
            if port >= 0:
                self.ports[port] = Channel(state=UNBOUND, remote_dom=remote_dom)
            return port

    def bind_interdomain(self, remote_dom: int, remote_port: int) -> int:
        """Bind to an unbound port. Within one domain (loopback) both ends are
        here; ports of other domains are reached through their RemoteEnd."""
        with self.lock:
            if remote_dom != self.dom.domid:
                connect = self.dom.connect_remote_port
                if connect is None:
                    return -ESRCH
                local = self.alloc()
                if local < 0:
                    return local
                end = connect(remote_dom, remote_port, local)
                if isinstance(end, int):
                    self.ports[local] = Channel()
                    self._freed(local)
                    return end
                self.ports[local] = Channel(state=INTERDOMAIN, remote_dom=remote_dom,
                                            remote_port=remote_port, remote=end)
                if end.bound is not None:
                    end.bound()
                return local
            rch = self.get(remote_port)
            if rch is None or rch.state != UNBOUND or rch.remote_dom not in (self.dom.domid, 0x7FF0):
                return -EINVAL
            local = self.alloc()
            if local < 0:
                return local
            self.ports[local] = Channel(state=INTERDOMAIN, remote_dom=self.dom.domid,
                                        remote_port=remote_port)
            rch.state, rch.remote_dom, rch.remote_port = INTERDOMAIN, self.dom.domid, local
            self.set_pending(local)       # Xen signals the binding end once
            return local

    def accept_remote(self, port: int, remote_dom: int, remote_port: int, notify,
                      closed=None, bound=None) -> bool:
        """The other side of EVTCHNOP_bind_interdomain, for an end that lives
        outside this domain (a dom0 backend, another domain process): bind
        this domain's unbound `port` (or take over the outside end of a port
        already bound to `remote_dom`: a restarted pyxend reconnecting its
        backends). `notify()` is called when the guest sends, `bound()` once
        the port is bound, `closed()` once the port no longer uses this end.
        False when the port is neither."""
        with self.lock:
            ch = self.get(port)
            if ch is None or ch.remote_dom not in (remote_dom, 0x7FF0):
                return False
            # a restarted dom0 service takes over its own end of a bound channel
            takeover = ch.state == INTERDOMAIN and isinstance(ch.remote, RemoteEnd) and \
                ch.remote_dom == remote_dom
            if ch.state != UNBOUND and not takeover:
                return False
            old = ch.remote if takeover else None
            ch.state, ch.remote_dom, ch.remote_port = INTERDOMAIN, remote_dom, remote_port
            ch.remote = RemoteEnd(remote_dom, notify, closed, bound)
            if bound is not None:
                bound()
        if old is not None:
            old.release()
        return True

    def detach_remote(self, port: int) -> None:
        """The outside end went away (a backend disconnected): the port is
        unbound again, as in Xen when the other domain closes its end."""
        with self.lock:
            ch = self.get(port)
            if ch is None or ch.state != INTERDOMAIN or ch.remote is None:
                return
            end = ch.remote
            ch.state, ch.remote, ch.remote_port = UNBOUND, None, 0
        end.release()

    def bind_to_remote(self, remote_dom: int, notify) -> int:
        """A port of this domain connected to a dom0 service (console, xenstore)."""
        with self.lock:
            port = self.alloc()
            if port < 0:
                raise RuntimeError(f"no event channel left for a dom0 service: {port}")
            self.ports[port] = Channel(state=INTERDOMAIN, remote_dom=remote_dom,
                                       remote=RemoteEnd(remote_dom, notify))
            return port

    def close(self, port: int) -> int:
        with self.lock:
            ch = self.get(port)
            if ch is None:
                return -EINVAL
            if ch.state == PIRQ:
                return -EINVAL
            if ch.state == VIRQ:
                self.virq_ports.pop((ch.vcpu, ch.virq), None)
            if ch.state == INTERDOMAIN and ch.remote is None and ch.remote_dom == self.dom.domid:
                other = self.get(ch.remote_port)
                if other is not None and other.state == INTERDOMAIN:
                    other.state, other.remote_port = UNBOUND, 0
            end = ch.remote
            self.ports[port] = Channel()
            self._freed(port)
            self.abi.clear_pending(port)
        if isinstance(end, RemoteEnd):
            end.release()
        return 0

    def bind_vcpu(self, port: int, vcpu: int) -> int:
        with self.lock:
            ch = self.get(port)
            if ch is None:
                return -ENOENT
            if vcpu >= len(self.dom.vcpus):
                return -ENOENT
            if ch.state == VIRQ and not virq_is_global(ch.virq):
                return -EINVAL
            if ch.state not in (VIRQ, UNBOUND, INTERDOMAIN, PIRQ):
                return -EINVAL
            if ch.state == VIRQ:
                self.virq_ports.pop((ch.vcpu, ch.virq), None)
                self.virq_ports[(vcpu, ch.virq)] = port
            ch.vcpu = vcpu
            return 0

    def reset(self) -> list[int]:
        """EVTCHNOP_reset: close the guest's ports and, as Xen does, go back
        to the 2-level ABI. Returns the guest frames the FIFO ABI used (the
        caller drops the references it took on them)."""
        with self.lock:
            for p in range(1, len(self.ports)):
                if self.ports[p].state != CLOSED and not self.ports[p].consumer:
                    self.close(p)
            two_level = TwoLevel(self)
            frames = self.abi.reset(two_level)
            self.abi = two_level
            # the 2-level ABI has 4096 ports: drop the closed ones above
            while len(self.ports) > two_level.max_ports and self.ports[-1].state == CLOSED:
                self.ports.pop()
            return frames

    # --- the FIFO ABI's control structures -------------------------------------------
    def init_control(self, vcpu_id: int, ctl_addr: int, frame: int | None = None) -> int:
        """EVTCHNOP_init_control once the guest's arguments are checked and its
        frame mapped (hypercalls/evtchn.py): the first control block switches
        the domain to the FIFO ABI with an empty event array."""
        with self.lock:
            fifo = self.abi if isinstance(self.abi, Fifo) else Fifo(self)
            rc = fifo.init_control(vcpu_id, ctl_addr, frame)
            if rc == 0:
                self.abi = fifo
            return rc

    def has_control_block(self, vcpu_id: int) -> bool:
        return self.abi.has_control_block(vcpu_id)

    def can_expand(self) -> int:
        """0 when EVTCHNOP_expand_array may add a page, else -EOPNOTSUPP (no
        FIFO control block yet) or -ENOSPC (the array is full)."""
        return self.abi.can_expand()

    def expand_array(self, page_addr: int, frame: int | None = None) -> int:
        with self.lock:
            return self.abi.expand_array(page_addr, frame)

    def set_priority(self, port: int, priority: int) -> int:
        with self.lock:
            return self.abi.set_priority(port, priority)
