"""Writes into guest memory take a writable type reference, as Xen's
get_page_and_type(PGT_writable_page): a frame in use as a page table (L1-L4)
or descriptor page is never written by pyxen or by a dom0 backend, and a
frame they keep writing into never becomes one (issue 13, "the hole").

guests/typedwrites.c tries every hypervisor path against an L1, L2, L3, L4
and a GDT frame; the dom0 tests map a guest's grants the way blkback and
netback do, in this process (LocalGuest) and as pyxend does from another
process (ForeignGrantTable over the domain's memfds)."""
from __future__ import annotations

import re
import struct
import threading
import time
from types import SimpleNamespace

import pytest

import guest_helpers
from pyxen.toolstack.builder import close_domain
from pyxen.hv.domain import Domain
from pyxen.hv.grant import GrantError, GNTST_general_error
from pyxen.hv.mm import FR_DIRTY, FR_TYPED, PGT_L1, PGT_WRITABLE, PageTableError

KINDS = ["L1", "L2", "L3", "L4", "GDT"]
PLANT = (1 << 47) | (1 << 44)


def boot(kvm, elf, cmdline="", memory_mb=32):
    return guest_helpers.boot(kvm, elf, cmdline=cmdline, memory_mb=memory_mb)


def success(result, console):
    assert re.findall(r"^Test result: .*$", console, re.M) == ["Test result: SUCCESS"], \
        console + "\n" + result.message
    assert result.reason == "poweroff", result.message


def test_hypervisor_writes_refuse_typed_frames(kvm, guest_elf):
    result, console = boot(kvm, guest_elf("typedwrites"), cmdline="domid=1")
    success(result, console)


@pytest.mark.parametrize("kind", KINDS)
def test_bounce_frame_on_a_read_only_typed_frame_crashes_the_domain(kvm, guest_elf, kind):
    """Xen writes the bounce frame through the guest's page tables and crashes
    the domain when it cannot; the frame is not written."""
    with guest_helpers.domain(kvm, guest_elf("typedwrites"), cmdline=f"bounce={kind}") \
            as (dom, out):
        result = guest_helpers.run(dom, 120)
        console = out.text
        m = re.search(r"bounce: kind=(\w+) mfn=(0x[0-9a-f]+)", console)
        assert m and m.group(1) == kind, console
        mfn = int(m.group(2), 16)
        entries = struct.unpack_from("<512Q", dom.ram.mm, mfn << 12)
    assert result.reason == "crash", console
    assert "bounce frame" in result.message, result.message
    guest_part = entries[:256] if kind == "L4" else entries
    planted = PLANT | (3 << 45) | (1 << 40) if kind == "GDT" else PLANT   # set_gdt's fixup
    assert [i for i, e in enumerate(guest_part) if e] == [5] and guest_part[5] == planted


# --- dom0: backends write through writable grant maps ----------------------------------------
def _remote_guest(dom):
    """What pyxend builds for a domain in another process: RemoteGuest over the
    domain's memfds, its control calls answered by the domain process's own
    handler (toolstack/domproc.py)."""
    import mmap
    from pyxen.kvm import GuestMemory
    from pyxen.toolstack.devices import RemoteGuest
    from pyxen.toolstack.domproc import DomainProcess
    proc = SimpleNamespace(dom=dom, link=SimpleNamespace(new_bridges=lambda: []))
    hello, _fds = DomainProcess.handle(proc, "hello", {})
    ram = mmap.mmap(dom.ram.fd, hello["ram_size"], mmap.MAP_SHARED,
                    mmap.PROT_READ | mmap.PROT_WRITE)
    heap = GuestMemory(hello["heap_size"], fd=__import__("os").dup(dom.heap.mem.fd))

    def call(method, _fds=(), **params):
        return DomainProcess.handle(proc, method, params)[0]
    guest = RemoteGuest(dom.domid, ram, heap, hello["nr_pages"], call=call, alive=lambda: True)
    return guest, proc, (ram, heap)


@pytest.mark.parametrize("where", ["in-process", "pyxend"])
def test_backend_writable_maps_hold_a_type_reference(kvm, guest_elf, where):
    """A guest grants dom0 an L1, L2, L3, L4 and a GDT frame and a plain one:
    dom0's writable maps of the typed ones are refused (GNTST_general_error),
    read-only ones are not; while dom0 maps the plain frame writable the
    guest cannot make it a table or descriptor page of any kind, after the
    unmap it can."""
    dom, out = guest_helpers.build(kvm, guest_elf("dom0writes"), name="g0")
    keep = ()
    try:
        t = threading.Thread(target=dom.run)
        t.start()

        def wait_for(text):
            end = time.monotonic() + 30
            while text not in out and time.monotonic() < end and t.is_alive():
                time.sleep(0.02)
            assert text in out, out.decode(errors="replace")
        wait_for(b"granted:")
        m = re.search(rb"granted: typed=(\d+) plain=(\d+) signal=(\d+)", out)
        typed, plain, signal = (int(x) for x in m.groups())
        if where == "in-process":
            grants = dom.grants
        else:
            guest, _proc, keep = _remote_guest(dom)
            grants = guest.grants
        for i, kind in enumerate(KINDS):
            with pytest.raises(GrantError) as e:
                grants.map_ref(typed + i, mapper=0, readonly=False)
            assert e.value.status == GNTST_general_error, kind
            h, view = grants.map_ref(typed + i, mapper=0, readonly=True)
            assert view.readonly
            grants.unmap(h)
        hp, pview = grants.map_ref(plain, mapper=0, readonly=False)
        hs, sview = grants.map_ref(signal, mapper=0, readonly=False)
        sview[:7] = b"mapped\0"
        wait_for(b"pins refused")
        grants.unmap(hp)
        sview[:9] = b"unmapped\0"
        grants.unmap(hs)
        t.join(30)
        assert not t.is_alive()
    finally:
        close_domain(dom)
        for x in keep:
            try:
                x.close()
            except BufferError:     # views the backend side handed out; freed with them
                pass
    console = out.text
    assert re.findall(r"^Test result: .*$", console, re.M) == ["Test result: SUCCESS"], console


def test_frame_refs_words(kvm):
    """The shared words: dom0's writable references and the domain's types
    exclude each other; a new pyxend drops what the previous one held."""
    dom = Domain(name="w", memory_mb=16, kvm=kvm)
    try:
        mm, fr = dom.mm, dom.mm.frefs
        assert fr.get_writable(100) and fr.get_writable(100) and fr.writers(100) == 2
        with pytest.raises(PageTableError) as e:
            mm.pin(100, 1)
        assert e.value.errno == 22 and mm.tcount[100] == 0
        assert not dom.release_frame(100)          # not ballooned out under dom0's feet
        fr.put_writable(100)
        fr.put_writable(100)
        # dom0 held it: log-dirty (live migration) sees it once
        assert 100 in fr.take_dirty() and 100 not in fr.take_dirty()
        mm.pin(100, 1)
        assert fr._load(100) == FR_TYPED and not fr.get_writable(100)
        mm.get_type(101, PGT_WRITABLE)              # the domain's own writers do not count
        assert fr.get_writable(101)
        mm.unpin(100)
        assert fr._load(100) == 0 and fr.get_writable(100)
        assert fr._load(100) == FR_DIRTY | 1 and fr.held() == [100, 101]
        assert not fr.get_writable(dom.nr_pages) and not fr.get_writable(-1)
        mm.pin(102, 1)
        assert fr.drop_writers() == 2               # 100 and 101; 102 stays typed
        assert fr.writers(100) == fr.writers(101) == 0 and fr._load(102) == FR_TYPED
        assert mm.ptype[102] == PGT_L1
    finally:
        dom.close()


def test_a_new_pyxend_drops_the_old_ones_references(kvm):
    from pyxen.toolstack.domproc import DomainProcess
    dom = Domain(name="w", memory_mb=16, kvm=kvm)
    try:
        dom.layout = SimpleNamespace(store_pfn=1, console_pfn=2)
        dom.store_port = dom.console_port = 1
        assert dom.mm.frefs.get_writable(50)
        DomainProcess.handle(SimpleNamespace(dom=dom, link=SimpleNamespace(new_bridges=lambda: [])),
                             "hello", {})
        assert dom.mm.frefs.writers(50) == 0
        dom.mm.pin(50, 1)
    finally:
        dom.layout = None
        dom.close()
