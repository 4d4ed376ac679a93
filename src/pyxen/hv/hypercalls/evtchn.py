"""event_channel_op: the event-channel ABI (Xen's common/event_channel.c,
event_2l.c, event_fifo.c). The state lives in pyxen.hv.events (the port
table) and its ABI object (evtchn_2l / evtchn_fifo); this only decodes the
guest's arguments, maps the FIFO ABI's guest pages and writes results."""
from __future__ import annotations

from .. import abi
from .. import layout as L
from ..abi import (HC, EFAULT, EINVAL, ENOENT, ENOSYS, EPERM, ESRCH,
                   DOMID_SELF, EVTCHNOP_bind_interdomain,
                   EVTCHNOP_bind_virq, EVTCHNOP_bind_pirq, EVTCHNOP_close, EVTCHNOP_send,
                   EVTCHNOP_status, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_ipi, EVTCHNOP_bind_vcpu,
                   EVTCHNOP_unmask, EVTCHNOP_reset, EVTCHNOP_init_control,
                   EVTCHNOP_expand_array, EVTCHNOP_set_priority, EVTCHN_FIFO_LINK_BITS)
from ..events import CLOSED, UNBOUND, INTERDOMAIN, VIRQ, IPI, FIFO_CONTROL_BLOCK_SIZE
from ..guestmem import GuestFault
from ..mm import PageTableError, PGT_WRITABLE


# the guest's argument structures (event_channel.h), as abi has them
_SEND = abi.checked_struct("<I", abi.EvtchnSend, "port")
_UNMASK = abi.checked_struct("<I", abi.EvtchnUnmask, "port")
_CLOSE = abi.checked_struct("<I", abi.EvtchnClose, "port")
_BIND_VIRQ = abi.checked_struct("<II", abi.EvtchnBindVirq, "virq vcpu")
_BIND_IPI = abi.checked_struct("<I", abi.EvtchnBindIpi, "vcpu")
_ALLOC_UNBOUND = abi.checked_struct("<HH", abi.EvtchnAllocUnbound, "dom remote_dom")
_BIND_INTERDOMAIN = abi.checked_struct("<H2xI", abi.EvtchnBindInterdomain,
                                       "remote_dom remote_port")
_STATUS = abi.checked_struct("<H2xI", abi.EvtchnStatus, "dom port")
_BIND_VCPU = abi.checked_struct("<II", abi.EvtchnBindVcpu, "port vcpu")
_RESET = abi.checked_struct("<H", abi.EvtchnReset, "dom")
_INIT_CONTROL = abi.checked_struct("<QII", abi.EvtchnInitControl, "control_gfn offset vcpu")
_EXPAND_ARRAY = abi.checked_struct("<Q", abi.EvtchnExpandArray, "array_gfn")
_SET_PRIORITY = abi.checked_struct("<II", abi.EvtchnSetPriority, "port priority")

# OUT fields: a bound port is written at the field's offset as an evtchn_port_t
_PORT = _SEND
_BIND_VIRQ_PORT = abi.EvtchnBindVirq.port.offset
_BIND_IPI_PORT = abi.EvtchnBindIpi.port.offset
_ALLOC_UNBOUND_PORT = abi.EvtchnAllocUnbound.port.offset
_BIND_INTERDOMAIN_PORT = abi.EvtchnBindInterdomain.local_port.offset
assert {f.size for f in (abi.EvtchnBindVirq.port, abi.EvtchnBindIpi.port,
                         abi.EvtchnAllocUnbound.port,
                         abi.EvtchnBindInterdomain.local_port)} == {_PORT.size}
# evtchn_status's OUT part (status, vcpu and the union) is written from
# `status` on, one format for each kind of channel; a format covers the
# whole structure, its IN part is cut off before the write
_STATUS_OUT = abi.EvtchnStatus.status.offset
_STATUS_UNBOUND = abi.checked_struct("<8xIIH6x", abi.EvtchnStatus, "status vcpu u.unbound_dom")
_STATUS_INTERDOMAIN = abi.checked_struct("<8xIIH2xI", abi.EvtchnStatus,
                                         "status vcpu u.interdomain.dom u.interdomain.port")
_STATUS_VIRQ = abi.checked_struct("<8xIII4x", abi.EvtchnStatus, "status vcpu u.virq")
_STATUS_OTHER = abi.checked_struct("<8xII8x", abi.EvtchnStatus, "status vcpu")
# evtchn_init_control's OUT part: link_bits and the padding after it
_INIT_CONTROL_OUT = abi.EvtchnInitControl.link_bits.offset
_INIT_CONTROL_LINK_BITS = abi.checked_struct("<16xB7x", abi.EvtchnInitControl, "link_bits")


def _map_guest_page(dom, gfn: int) -> int | None:
    """Host address of a guest frame pyxen keeps writing into (a FIFO
    control block or event array page), or None (Xen: -EINVAL). Like Xen's
    map_guest_page() it takes a writable type reference, so the frame cannot
    become a page table (or a descriptor page) while pyxen uses it, nor be
    ballooned out; _unmap_guest_page() drops it."""
    mm = dom.mm
    if not mm.owns(gfn):
        return None
    try:
        mm.get_type(gfn, PGT_WRITABLE)
    except PageTableError as e:
        dom.log.info("d%d: event channel page %#x refused: %s", dom.domid, gfn, e)
        return None
    return dom.ram.addr + (gfn << 12)


def _unmap_guest_page(dom, gfn: int) -> None:
    dom.mm.put_type(gfn)


def event_channel_op(vcpu, cmd, arg, *_):
    dom = vcpu.domain
    ev = dom.events
    mem = vcpu.mem
    try:
        if cmd == EVTCHNOP_send:
            (port,) = _SEND.unpack(mem.read(arg, _SEND.size))
            return ev.send(port)
        if cmd == EVTCHNOP_unmask:
            (port,) = _UNMASK.unpack(mem.read(arg, _UNMASK.size))
            if ev.get(port) is None:
                return -EINVAL
            ev.unmask(port)
            return 0
        if cmd == EVTCHNOP_bind_virq:
            virq, vcpu_id = _BIND_VIRQ.unpack(mem.read(arg, _BIND_VIRQ.size))
            port = ev.bind_virq(virq, vcpu_id)
            if port < 0:
                return port
            mem.write(arg + _BIND_VIRQ_PORT, _PORT.pack(port))
            return 0
        if cmd == EVTCHNOP_bind_ipi:
            (vcpu_id,) = _BIND_IPI.unpack(mem.read(arg, _BIND_IPI.size))
            port = ev.bind_ipi(vcpu_id)
            if port < 0:
                return port
            mem.write(arg + _BIND_IPI_PORT, _PORT.pack(port))
            return 0
        if cmd == EVTCHNOP_alloc_unbound:
            d, remote = _ALLOC_UNBOUND.unpack(mem.read(arg, _ALLOC_UNBOUND.size))
            if d not in (DOMID_SELF, dom.domid):
                return -EPERM
            if remote == DOMID_SELF:
                remote = dom.domid
            port = ev.alloc_unbound(remote)
            if port < 0:
                return port
            mem.write(arg + _ALLOC_UNBOUND_PORT, _PORT.pack(port))
            return 0
        if cmd == EVTCHNOP_bind_interdomain:
            remote_dom, remote_port = _BIND_INTERDOMAIN.unpack(
                mem.read(arg, _BIND_INTERDOMAIN.size))
            if remote_dom == DOMID_SELF:
                remote_dom = dom.domid
            port = ev.bind_interdomain(remote_dom, remote_port)
            if port < 0:
                return port
            mem.write(arg + _BIND_INTERDOMAIN_PORT, _PORT.pack(port))
            return 0
        if cmd == EVTCHNOP_bind_pirq:
            return -EPERM          # physical IRQs are not a domU's
        if cmd == EVTCHNOP_close:
            (port,) = _CLOSE.unpack(mem.read(arg, _CLOSE.size))
            return ev.close(port)
        if cmd == EVTCHNOP_status:
            d, port = _STATUS.unpack(mem.read(arg, _STATUS.size))
            if d not in (DOMID_SELF, dom.domid):
                return -EPERM if d < 0x7FF0 else -ESRCH
            if port >= len(ev.ports) and port >= ev.limit():
                return -EINVAL
            ch = ev.ports[port] if port < len(ev.ports) else None
            state = ch.state if ch is not None else CLOSED
            vcpu_id = ch.vcpu if ch else 0
            if state == UNBOUND:
                body = _STATUS_UNBOUND.pack(state, vcpu_id, ch.remote_dom)
            elif state == INTERDOMAIN:
                body = _STATUS_INTERDOMAIN.pack(state, vcpu_id, ch.remote_dom, ch.remote_port)
            elif state == VIRQ:
                body = _STATUS_VIRQ.pack(state, vcpu_id, ch.virq)
            else:
                body = _STATUS_OTHER.pack(state, vcpu_id)
            mem.write(arg + _STATUS_OUT, body[_STATUS_OUT:])
            return 0
        if cmd == EVTCHNOP_bind_vcpu:
            port, vcpu_id = _BIND_VCPU.unpack(mem.read(arg, _BIND_VCPU.size))
            return ev.bind_vcpu(port, vcpu_id)
        if cmd == EVTCHNOP_reset:
            (d,) = _RESET.unpack(mem.read(arg, _RESET.size))
            if d not in (DOMID_SELF, dom.domid):
                return -EPERM
            for gfn in ev.reset():          # back to the 2-level ABI, as in Xen
                _unmap_guest_page(dom, gfn)
            return 0
        if cmd == EVTCHNOP_init_control:
            # Xen's evtchn_fifo_init_control(), checks in its order; a
            # failure leaves no FIFO state behind (XSA-188)
            gfn, offset, vcpu_id = _INIT_CONTROL.unpack(mem.read(arg, _INIT_CONTROL.size))
            if vcpu_id >= len(dom.vcpus):
                return -ENOENT
            if offset > L.PAGE_SIZE - FIFO_CONTROL_BLOCK_SIZE or offset & 7:
                return -EINVAL
            if ev.has_control_block(vcpu_id):
                return -EINVAL
            addr = _map_guest_page(dom, gfn)
            if addr is None:
                return -EINVAL
            rc = ev.init_control(vcpu_id, addr + offset, gfn)
            if rc:
                _unmap_guest_page(dom, gfn)
                return rc
            body = _INIT_CONTROL_LINK_BITS.pack(EVTCHN_FIFO_LINK_BITS)
            mem.write(arg + _INIT_CONTROL_OUT, body[_INIT_CONTROL_OUT:])
            return 0
        if cmd == EVTCHNOP_expand_array:
            (gfn,) = _EXPAND_ARRAY.unpack(mem.read(arg, _EXPAND_ARRAY.size))
            rc = ev.can_expand()        # -EOPNOTSUPP without FIFO, -ENOSPC when full
            if rc:
                return rc
            addr = _map_guest_page(dom, gfn)
            if addr is None:
                return -EINVAL
            rc = ev.expand_array(addr, gfn)
            if rc:
                _unmap_guest_page(dom, gfn)
            return rc
        if cmd == EVTCHNOP_set_priority:
            port, prio = _SET_PRIORITY.unpack(mem.read(arg, _SET_PRIORITY.size))
            return ev.set_priority(port, prio)
    except GuestFault:
        return -EFAULT
    return -ENOSYS


HANDLERS = {HC.event_channel_op: event_channel_op}
