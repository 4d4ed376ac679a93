"""The event-channel core (pyxen.hv.events) on plain host memory: FIFO
queue rules and poller wake-ups, without KVM."""
from __future__ import annotations

import ctypes
import threading

from pyxen.hv.abi import SharedInfo
from pyxen.hv import events as E


class FakeVcpu:
    def __init__(self, info, i):
        self.id = i
        self.vcpu_info = info.vcpu_info[i]
        self.vcpu_info_addr = ctypes.addressof(self.vcpu_info)
        self.poll_ports: set[int] = set()
        self.wake = threading.Event()
        self.notified = 0

    def notify_event(self):
        self.notified += 1
        self.wake.set()


class FakeDomain:
    domid = 1

    def __init__(self, n=2):
        self.shared = SharedInfo()
        self.vcpus = [FakeVcpu(self.shared, i) for i in range(n)]
        self.connect_remote_port = None

    def wake_pollers(self, port):
        for v in self.vcpus:
            if port in v.poll_ports:
                v.wake.set()


def make(n=2, fifo=False):
    dom = FakeDomain(n)
    ev = E.EventChannels(dom)
    ev.shared = ctypes.addressof(dom.shared)
    dom.keep = []
    if fifo:
        for i in range(n):
            cb = (ctypes.c_uint32 * 18)()
            dom.keep.append(cb)
            assert ev.init_control(i, ctypes.addressof(cb)) == 0
        arr = (ctypes.c_uint32 * 1024)()
        dom.keep.append(arr)
        assert ev.expand_array(ctypes.addressof(arr)) == 0
        dom.ctl = dom.keep[:n]
        dom.words = arr
    return dom, ev


def test_poller_on_another_vcpu_is_woken():
    """vCPU 1 polls a port bound to vCPU 0 (Xen allows any port of the
    domain): raising it must wake vCPU 1 even though vCPU 0 is not polling."""
    for fifo in (False, True):
        dom, ev = make(2, fifo)
        port = ev.bind_ipi(0)
        dom.vcpus[1].poll_ports = {port}
        assert ev.send(port) == 0
        assert dom.vcpus[1].wake.is_set(), f"fifo={fifo}"


def test_fifo_ready_only_for_a_new_head():
    dom, ev = make(1, fifo=True)
    cb = dom.ctl[0]
    a, b = ev.bind_ipi(0), ev.bind_ipi(0)
    ev.send(a)
    assert cb[0] & (1 << 7) and cb[2 + 7] == a            # READY, HEAD = a
    cb[0] = 0                                              # the guest took READY
    ev.send(b)                                             # linked onto a's tail
    assert dom.words[a] & E.FIFO_LINK_MASK == b
    assert cb[0] == 0, "READY set again for an event linked onto the tail"


def test_fifo_event_for_a_vcpu_without_control_block_stays_pending_unlinked():
    dom, ev = make(2, fifo=False)
    cb0 = (ctypes.c_uint32 * 18)()
    arr = (ctypes.c_uint32 * 1024)()
    assert ev.init_control(0, ctypes.addressof(cb0)) == 0      # vCPU 1 has none yet
    assert ev.expand_array(ctypes.addressof(arr)) == 0
    port = ev.bind_ipi(1)
    ev.send(port)
    assert arr[port] & (1 << E.FIFO_PENDING)
    assert not arr[port] & (1 << E.FIFO_LINKED), "linked into no queue: lost for good"
    cb1 = (ctypes.c_uint32 * 18)()
    assert ev.init_control(1, ctypes.addressof(cb1)) == 0
    ev.unmask(port)                                           # what the guest does next
    assert arr[port] & (1 << E.FIFO_LINKED) and cb1[2 + 7] == port and cb1[0] & (1 << 7)


def test_poll_refuses_ports_beyond_the_table():
    """SCHEDOP_poll on a port that does not exist is -EINVAL (it used to
    read the pending bitmap out of bounds and could kill pyxen)."""
    import struct
    from pyxen.hv.hypercalls.sched import sched_op
    from pyxen.hv.abi import SCHEDOP_poll, EINVAL

    dom, ev = make(1)
    port = ev.bind_ipi(0)

    class Mem:
        def __init__(self, ports):
            self.data = {0x1000: struct.pack("<QIxxxxQ", 0x2000, len(ports), 1),
                         0x2000: struct.pack(f"<{len(ports)}I", *ports)}

        def read(self, va, n):
            return self.data[va][:n]

    class V:
        domain = dom
    dom.events = ev
    dom.block = lambda vcpu, poll: 0
    for bad in (4096, 100000, 0xFFFFFFFF):
        v = V()
        v.mem = Mem([port, bad])
        assert sched_op(v, SCHEDOP_poll, 0x1000) == -EINVAL
    v.mem = Mem([port])
    assert sched_op(v, SCHEDOP_poll, 0x1000) == 0


def test_fifo_same_event_raised_again_after_being_consumed():
    """The guest consumed the only event of a queue (its tail); raising it
    again must make it the new HEAD, not link it onto itself."""
    dom, ev = make(1, fifo=True)
    cb, words = dom.ctl[0], dom.words
    p = ev.bind_ipi(0)
    for _ in range(3):
        ev.send(p)
        assert cb[2 + 7] == p and cb[0] & (1 << 7)
        assert words[p] & E.FIFO_LINK_MASK == 0, hex(words[p])
        # the guest consumes it: clear READY, LINKED + link, PENDING
        cb[0] = 0
        words[p] &= ~((1 << E.FIFO_LINKED) | E.FIFO_LINK_MASK | (1 << E.FIFO_PENDING))


def test_unmask_is_serialised_with_raisers():
    """EVTCHNOP_unmask may link a FIFO event into a queue, like a raise from
    the timer thread or a dom0 service does: it must hold the channel lock
    (it ran under the domain lock only, which raisers do not take)."""
    dom, ev = make(1, fifo=True)
    p = ev.bind_ipi(0)
    dom.words[p] |= 1 << E.FIFO_MASKED
    ev.send(p)
    done = threading.Event()
    with ev.lock:
        t = threading.Thread(target=lambda: (ev.unmask(p), done.set()))
        t.start()
        assert not done.wait(0.1), "unmask ran while another thread held the channel lock"
    assert done.wait(2)
    assert dom.ctl[0][2 + 7] == p


def test_expand_array_needs_fifo_and_reset_goes_back_to_2l():
    """Xen: EVTCHNOP_expand_array before any control block is -EOPNOTSUPP;
    EVTCHNOP_reset closes the guest's ports and returns to the 2-level ABI
    (pyxen's own ports stay, with their pending state), handing back the
    frames whose references the FIFO ABI held."""
    dom, ev = make(1)
    arr = (ctypes.c_uint32 * 1024)()
    assert ev.expand_array(ctypes.addressof(arr), 0x55) == -E.EOPNOTSUPP
    cb = (ctypes.c_uint32 * 18)()
    mine = ev.bind_to_remote(0, lambda: None)
    ev.ports[mine].consumer = True
    assert ev.init_control(0, ctypes.addressof(cb), 0x44) == 0
    assert ev.expand_array(ctypes.addressof(arr), 0x55) == 0
    guest = ev.bind_ipi(0)
    ev.raise_port(mine)
    assert ev.is_pending(mine)
    assert sorted(ev.reset()) == [0x44, 0x55]
    assert not ev.fifo and ev.get(guest) is None and ev.get(mine) is not None
    assert ev.is_pending(mine)                   # now in shared_info's bitmap
    assert ev.reset() == []
    assert ev.expand_array(ctypes.addressof(arr)) == -E.EOPNOTSUPP
    assert ev.init_control(0, ctypes.addressof(cb)) == 0


def test_abi_objects_is_masked():
    """The ABI is an object (Xen's evtchn_port_ops): TwoLevel until the
    first EVTCHNOP_init_control, Fifo from then; is_masked reads the ABI's
    own mask (a FIFO port without an event word counts as masked, as in Xen)."""
    from pyxen import _atomic as A
    dom, ev = make(1)
    assert isinstance(ev.abi, E.TwoLevel) and ev.limit() == E.DEFAULT_MAX_PORT + 1
    p = ev.bind_ipi(0)
    assert not ev.is_masked(p)
    A.set_bit(ev.shared + E.SHARED_MASK_OFF, p)
    assert ev.is_masked(p)
    assert ev.set_priority(p, 3) == -E.ENOSYS
    dom, ev = make(1, fifo=True)
    assert isinstance(ev.abi, E.Fifo) and ev.fifo
    p = ev.bind_ipi(0)
    assert not ev.is_masked(p) and ev.is_masked(2000)
    dom.words[p] |= 1 << E.FIFO_MASKED
    assert ev.is_masked(p)
    assert ev.set_priority(p, 16) == -E.EINVAL and ev.set_priority(p, 3) == 0
