"""event_channel_op: the event-channel ABI (Xen's common/event_channel.c,
event_2l.c, event_fifo.c). The state lives in pyxen.hv.events (the port
table) and its ABI object (evtchn_2l / evtchn_fifo); this only decodes the
guest's arguments, maps the FIFO ABI's guest pages and writes results."""
from __future__ import annotations

import struct

from .. import layout as L
from ..abi import (HC, EFAULT, EINVAL, ENOENT, ENOSYS, EPERM, ESRCH,
                   DOMID_SELF, EVTCHNOP_bind_interdomain,
                   EVTCHNOP_bind_virq, EVTCHNOP_bind_pirq, EVTCHNOP_close, EVTCHNOP_send,
                   EVTCHNOP_status, EVTCHNOP_alloc_unbound, EVTCHNOP_bind_ipi, EVTCHNOP_bind_vcpu,
                   EVTCHNOP_unmask, EVTCHNOP_reset, EVTCHNOP_init_control,
                   EVTCHNOP_expand_array, EVTCHNOP_set_priority)
from ..events import CLOSED, UNBOUND, INTERDOMAIN, VIRQ, IPI, FIFO_CONTROL_BLOCK_SIZE
from ..guestmem import GuestFault
from ..mm import PageTableError, PGT_WRITABLE


def _u32(vcpu, va, n=1):
    return struct.unpack(f"<{n}I", vcpu.mem.read(va, 4 * n))


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
            (port,) = _u32(vcpu, arg)
            return ev.send(port)
        if cmd == EVTCHNOP_unmask:
            (port,) = _u32(vcpu, arg)
            if ev.get(port) is None:
                return -EINVAL
            ev.unmask(port)
            return 0
        if cmd == EVTCHNOP_bind_virq:
            virq, vcpu_id = _u32(vcpu, arg, 2)
            port = ev.bind_virq(virq, vcpu_id)
            if port < 0:
                return port
            mem.write(arg + 8, struct.pack("<I", port))
            return 0
        if cmd == EVTCHNOP_bind_ipi:
            (vcpu_id,) = _u32(vcpu, arg)
            port = ev.bind_ipi(vcpu_id)
            if port < 0:
                return port
            mem.write(arg + 4, struct.pack("<I", port))
            return 0
        if cmd == EVTCHNOP_alloc_unbound:
            d, remote = struct.unpack("<HH", mem.read(arg, 4))
            if d not in (DOMID_SELF, dom.domid):
                return -EPERM
            if remote == DOMID_SELF:
                remote = dom.domid
            port = ev.alloc_unbound(remote)
            if port < 0:
                return port
            mem.write(arg + 4, struct.pack("<I", port))
            return 0
        if cmd == EVTCHNOP_bind_interdomain:
            remote_dom, remote_port = struct.unpack("<H2xI", mem.read(arg, 8))
            if remote_dom == DOMID_SELF:
                remote_dom = dom.domid
            port = ev.bind_interdomain(remote_dom, remote_port)
            if port < 0:
                return port
            mem.write(arg + 8, struct.pack("<I", port))
            return 0
        if cmd == EVTCHNOP_bind_pirq:
            return -EPERM          # physical IRQs are not a domU's
        if cmd == EVTCHNOP_close:
            (port,) = _u32(vcpu, arg)
            return ev.close(port)
        if cmd == EVTCHNOP_status:
            d, port = struct.unpack("<H2xI", mem.read(arg, 8))
            if d not in (DOMID_SELF, dom.domid):
                return -EPERM if d < 0x7FF0 else -ESRCH
            if port >= len(ev.ports) and port >= ev.limit():
                return -EINVAL
            ch = ev.ports[port] if port < len(ev.ports) else None
            state = ch.state if ch is not None else CLOSED
            body = struct.pack("<II", state, ch.vcpu if ch else 0)
            if state == UNBOUND:
                body += struct.pack("<H6x", ch.remote_dom)
            elif state == INTERDOMAIN:
                body += struct.pack("<H2xI", ch.remote_dom, ch.remote_port)
            elif state == VIRQ:
                body += struct.pack("<I4x", ch.virq)
            else:
                body += bytes(8)
            mem.write(arg + 8, body)
            return 0
        if cmd == EVTCHNOP_bind_vcpu:
            port, vcpu_id = _u32(vcpu, arg, 2)
            return ev.bind_vcpu(port, vcpu_id)
        if cmd == EVTCHNOP_reset:
            (d,) = struct.unpack("<H", mem.read(arg, 2))
            if d not in (DOMID_SELF, dom.domid):
                return -EPERM
            for gfn in ev.reset():          # back to the 2-level ABI, as in Xen
                _unmap_guest_page(dom, gfn)
            return 0
        if cmd == EVTCHNOP_init_control:
            # Xen's evtchn_fifo_init_control(), checks in its order; a
            # failure leaves no FIFO state behind (XSA-188)
            gfn, offset, vcpu_id = struct.unpack("<QII", mem.read(arg, 16))
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
            mem.write(arg + 16, struct.pack("<B7x", 17))
            return 0
        if cmd == EVTCHNOP_expand_array:
            (gfn,) = struct.unpack("<Q", mem.read(arg, 8))
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
            port, prio = _u32(vcpu, arg, 2)
            return ev.set_priority(port, prio)
    except GuestFault:
        return -EFAULT
    return -ENOSYS


HANDLERS = {HC.event_channel_op: event_channel_op}
