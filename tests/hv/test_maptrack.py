"""The grant maptrack limit (issue 13): a domain's own grant mappings are
tracked in at most max_maptrack_frames frames of 256 handles (Xen 4.17's
default 1024, xl.cfg max_maptrack_frames=), a map past that is refused with
GNTST_no_space (Xen 4.17's status for "Failed to obtain maptrack handle"),
and what pyxen keeps per mapping is about what Xen keeps (a guest once
mapped its own grant 204,800 times for +50 MB)."""
from __future__ import annotations

import os
import re
import threading
import time
import tracemalloc

import pytest

from pyxen.hv.grant import MAX_MAPTRACK_FRAMES, MAPTRACK_PER_FRAME, MapTrack
import guest_helpers
from pyxen.toolstack.builder import close_domain


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run_guest(dom, out: bytearray) -> tuple[str, int]:
    """Run a built domain running guests/maptrack.c; returns its console and
    how much this process grew meanwhile (peak RSS, sampled)."""
    base = peak = _rss()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.wait(0.05):
            peak = max(peak, _rss())
    t = threading.Thread(target=sample)
    t.start()
    try:
        result = dom.run()
    finally:
        done.set()
        t.join()
    console = out.decode(errors="replace")
    assert re.findall(r"^Test result: .*$", console, re.M) == ["Test result: SUCCESS"], \
        console[-3000:] + "\n" + result.message
    return console, peak - base


def test_maptrack_limit_from_the_domain_config(kvm, guest_elf):
    """max_maptrack_frames=4 in xl.cfg: 1024 mappings, the next is refused."""
    from pyxen.toolstack.domconfig import DomainConfig
    from pyxen.toolstack.builder import LocalServices, build_domain, close_domain
    from pyxen.toolstack.xlcfg import parse
    elf = guest_elf("maptrack")
    cfg = DomainConfig.from_config(parse(
        f'name="mt"\nkernel="{elf}"\nmemory=32\nextra="domid=1 expect=1024"\n'
        'max_maptrack_frames=4\n', "t.cfg"), check_files=False)
    assert cfg.max_maptrack_frames == 4
    out = bytearray()
    dom = build_domain(cfg, LocalServices(out.extend), console_io=out.extend, kvm=kvm)
    try:
        assert dom.grants.maptrack.limit == 4 * MAPTRACK_PER_FRAME
        console, _ = run_guest(dom, out)
    finally:
        close_domain(dom)
    assert "maptrack: 1024 mappings, then status -13" in console


@pytest.mark.parametrize("text, problem", [('max_maptrack_frames="-1"', "at least 0|must be a number"),
                                           ("max_maptrack_frames=1025", "at most 1024"),
                                           ('max_maptrack_frames="x"', "must be a number")])
def test_maptrack_frames_config_errors(text, problem):
    from pyxen.toolstack.domconfig import DomainConfig, XlCfgError
    from pyxen.toolstack.xlcfg import parse
    with pytest.raises(XlCfgError, match=problem):
        DomainConfig.from_config(parse(f'name="a"\nkernel="k"\n{text}\n', "t.cfg"),
                                 check_files=False)


def test_maptrack_default_limit_keeps_memory_bounded(kvm, guest_elf):
    """Xen's default: 1024 frames, 262,144 mappings of one page, then
    GNTST_no_space; pyxen's process grows by a few MB (Xen's maptrack is 4 MB
    at that size), not the 50 MB it once did."""
    dom, out = guest_helpers.build(
        kvm, guest_elf("maptrack"), name="mt",
        cmdline=f"domid=1 expect={MAX_MAPTRACK_FRAMES * MAPTRACK_PER_FRAME}")
    try:
        console, grew = run_guest(dom, out)
    finally:
        close_domain(dom)
    assert "maptrack: 262144 mappings, then status -13" in console
    print(f"\n262,144 grant mappings: the domain process grew {grew / 2**20:.1f} MB")
    assert grew < 16 << 20


def test_maptrack_structure_at_the_default_limit():
    tracemalloc.start()
    try:
        mt = MapTrack()
        first = []
        n = 0
        base = tracemalloc.get_traced_memory()[0]
        t = time.monotonic()
        while (h := mt.get()) is not None:
            mt.set(h, 5, 1 | 4, 1)
            if n < 3:
                first.append(h)
            n += 1
        grew = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert n == 262144 == mt.limit and first == [0, 1, 2]
    assert grew < 4 << 20, grew            # 12 bytes a handle
    assert mt.lookup(7).ref == 5 and mt.lookup(262144) is None
    mt.put(7)
    mt.put(3)
    assert mt.lookup(7) is None
    assert mt.get() == 7 and mt.get() == 3 and mt.get() is None     # reused in freeing order
    assert time.monotonic() - t < 5
