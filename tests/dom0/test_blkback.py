"""blkback against a frontend played by the test (tests/dom0/pvfront.py):
every request kind Linux's blkfront sends, the features it negotiates, and
the broken requests a hostile guest could send. The domain, its memory,
grant table and event channels are real; the image is a real file."""
from __future__ import annotations

import os
import struct
import subprocess

import pytest

from pyxen.dom0.backends import blkback as B
from pyxen.dom0.backends import xenbus
from pyxen.dom0.backends.guest import LocalGuest
from pyxen.dom0.xenstore.server import XenStoreServer
from pyxen.hv.domain import Domain
from pyxen.toolstack.devices import DeviceConfigError, DomainDevices
from pyxen.toolstack.devkinds import VBD
from pyxen.toolstack.devspec import parse_disk_spec

from pvfront import Frontend, RingWriter, RING_FRAME, DATA_FRAME

MiB = 1 << 20


@pytest.fixture
def xs():
    return XenStoreServer(state_file=None)


@pytest.fixture
def domain(kvm):
    doms = []

    def make(domid=1):
        d = Domain(name=f"d{domid}", memory_mb=16, kvm=kvm, domid=domid)
        doms.append(d)
        return d
    yield make
    for d in doms:
        d.close()


@pytest.fixture
def image(tmp_path):
    def make(name="disk.img", size=8 * MiB, fill=None):
        p = tmp_path / name
        with open(p, "wb") as f:
            if fill is not None:
                f.write(fill * (size // len(fill)))
            else:
                f.truncate(size)
        return p
    return make


class Disk:
    """A connected vbd: the frontend's ring and port, the backend object."""

    def __init__(self, dom, xs, path, spec_extra="", persistent=True, devid_vdev="xvdb"):
        self.devs = DomainDevices(xs, LocalGuest(dom))
        spec = parse_disk_spec(f"vdev={devid_vdev}, {spec_extra or 'format=raw, '}target={path}")
        self.dev = self.devs.attach(VBD, spec)
        self.fe = Frontend(dom, xs, "vbd", spec.devid)
        self.fe.wait_be_state(xenbus.INITWAIT)
        self.ring = RingWriter(self.fe, RING_FRAME, B.SLOT)
        ref = self.fe.init_ring(RING_FRAME)
        self.port = self.fe.alloc_port()
        self.fe.write({"ring-ref": ref, "event-channel": self.port, "protocol": "x86_64-abi",
                       "feature-persistent": int(persistent), "state": xenbus.INITIALISED})
        self.fe.wait_be_state(xenbus.CONNECTED)
        self.next_id = 1

    def request(self, op, sector=0, segs=(), nseg=None):
        rid = self.next_id
        self.next_id += 1
        raw = struct.pack("<BBHxxxxQQ", op, len(segs) if nseg is None else nseg, 0, rid, sector)
        for gref, first, last in segs:
            raw += struct.pack("<IBBxx", gref, first, last)
        return rid, raw.ljust(B.SLOT, b"\0")

    def do(self, raw_list):
        for _, raw in raw_list:
            self.ring.push(raw, self.port)
        out = []
        for r in self.ring.responses(len(raw_list)):
            rid, op, status = struct.unpack_from("<QBxh", r)
            out.append((rid, op, status))
        return out

    def data_pages(self, n, readonly=False, start=DATA_FRAME):
        return [(start + i, self.fe.grant(start + i, readonly)) for i in range(n)]

    def close(self):
        self.devs.close_all()


def test_connects_with_linux_features(domain, xs, image):
    dom = domain()
    disk = Disk(dom, xs, image())
    rd = disk.fe.read_be
    assert rd("sectors") == str(8 * MiB // 512) and rd("sector-size") == "512"
    assert rd("feature-flush-cache") == "1" and rd("feature-barrier") == "1"
    assert rd("feature-discard") == "1" and rd("feature-persistent") == "1"
    assert int(rd("feature-max-indirect-segments")) >= 32
    assert int(rd("multi-queue-max-queues")) > 1
    assert rd("mode") == "w" and rd("info") == "0"
    assert disk.dev.persistent
    disk.close()


def test_write_then_read_back_direct_and_indirect(domain, xs, image):
    dom = domain()
    path = image()
    disk = Disk(dom, xs, path)
    pages = disk.data_pages(40)
    for i, (frame, _) in enumerate(pages):
        disk.fe.page(frame)[:] = bytes([i + 1]) * 4096
    # direct: 11 segments, whole pages, at sector 8
    rid, raw = disk.request(B.OP_WRITE, 8, [(ref, 0, 7) for _, ref in pages[:11]])
    assert disk.do([(rid, raw)]) == [(rid, B.OP_WRITE, B.RSP_OKAY)]
    data = path.read_bytes()
    assert data[8 * 512:8 * 512 + 11 * 4096] == b"".join(bytes([i + 1]) * 4096 for i in range(11))
    # indirect: 40 segments described in an indirect page, a sub-page segment last
    ind_frame = DATA_FRAME + 100
    ind_ref = disk.fe.grant(ind_frame, readonly=True)
    segs = [(ref, 0, 7) for _, ref in pages[:39]] + [(pages[39][1], 2, 3)]
    ind = disk.fe.page(ind_frame)
    for i, (ref, f, l) in enumerate(segs):
        struct.pack_into("<IBBxx", ind, 8 * i, ref, f, l)
    raw = struct.pack("<BBHxxxxQQHxx8I", B.OP_INDIRECT, B.OP_WRITE, 40, 77, 1000, 0,
                      ind_ref, 0, 0, 0, 0, 0, 0, 0).ljust(B.SLOT, b"\0")
    assert disk.do([(77, raw)]) == [(77, B.OP_WRITE, B.RSP_OKAY)]   # answered as a write
    data = path.read_bytes()
    want = b"".join(bytes([i + 1]) * 4096 for i in range(39)) + bytes([40]) * 1024
    assert data[1000 * 512:1000 * 512 + len(want)] == want
    # read it back into fresh pages
    back = disk.data_pages(11, start=DATA_FRAME + 200)
    rid, raw = disk.request(B.OP_READ, 8, [(ref, 0, 7) for _, ref in back])
    assert disk.do([(rid, raw)])[0][2] == B.RSP_OKAY
    for i, (frame, _) in enumerate(back):
        assert bytes(disk.fe.page(frame)) == bytes([i + 1]) * 4096
    st = disk.dev.stats()
    assert st["wr_req"] == 2 and st["rd_req"] == 1 and st["wr_sect"] == 11 * 8 + 39 * 8 + 2
    disk.close()


def test_flush_and_barrier_reach_fdatasync(domain, xs, image, monkeypatch):
    calls = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append(fd), real(fd))[1])
    dom = domain()
    disk = Disk(dom, xs, image())
    (frame, ref), = disk.data_pages(1)
    disk.fe.page(frame)[:] = b"B" * 4096
    r1 = disk.request(B.OP_FLUSH)
    r2 = disk.request(B.OP_WRITE_BARRIER, 16, [(ref, 0, 7)])
    assert [s for _, _, s in disk.do([r1, r2])] == [B.RSP_OKAY, B.RSP_OKAY]
    assert len(calls) == 2
    disk.close()


def test_discard_punches_a_hole(domain, xs, image):
    dom = domain()
    path = image(fill=b"\xaa" * 4096)
    before = os.stat(path).st_blocks
    disk = Disk(dom, xs, path)
    raw = struct.pack("<BBHxxxxQQQ", B.OP_DISCARD, 0, 0, 5, 0, 8 * MiB // 512 // 2)
    assert disk.do([(5, raw.ljust(B.SLOT, b"\0"))]) == [(5, B.OP_DISCARD, B.RSP_OKAY)]
    assert os.stat(path).st_blocks < before
    data = path.read_bytes()
    assert data[:4 * MiB] == bytes(4 * MiB) and data[4 * MiB:4 * MiB + 4] == b"\xaa" * 4
    disk.close()


def test_read_only_disk_refuses_writes_and_discard(domain, xs, image):
    dom = domain()
    path = image(fill=b"R" * 4096)
    disk = Disk(dom, xs, path, spec_extra="access=ro, ")
    assert disk.fe.read_be("mode") == "r" and int(disk.fe.read_be("info")) & B.VDISK_READONLY
    assert disk.fe.read_be("feature-discard") is None
    (frame, ref), = disk.data_pages(1)
    disk.fe.page(frame)[:] = b"W" * 4096
    w = disk.request(B.OP_WRITE, 0, [(ref, 0, 7)])
    d = (9, struct.pack("<BBHxxxxQQQ", B.OP_DISCARD, 0, 0, 9, 0, 8).ljust(B.SLOT, b"\0"))
    r = disk.request(B.OP_READ, 0, [(ref, 0, 7)])
    st = [s for _, _, s in disk.do([w, d, r])]
    assert st[0] == B.RSP_ERROR and st[1] in (B.RSP_ERROR, B.RSP_EOPNOTSUPP) and st[2] == 0
    assert path.read_bytes()[:4096] == b"R" * 4096
    disk.close()


def test_bad_requests_fail_alone_and_the_ring_carries_on(domain, xs, image):
    dom = domain()
    disk = Disk(dom, xs, image())
    (frame, ref), = disk.data_pages(1)
    foreign = disk.fe.grant(DATA_FRAME + 1, domid=7)         # granted to someone else
    sectors = 8 * MiB // 512
    reqs = [
        disk.request(B.OP_READ, sectors - 4, [(ref, 0, 7)]),        # runs past the end
        disk.request(B.OP_READ, 0, [(ref, 3, 9)]),                   # sector 9 of a page
        disk.request(B.OP_READ, 0, [(ref, 5, 2)]),                   # first > last
        disk.request(B.OP_READ, 0, [(60000, 0, 7)]),                 # no such grant
        disk.request(B.OP_READ, 0, [(foreign, 0, 7)]),               # not granted to dom0
        disk.request(B.OP_READ, 0, [], nseg=0),                      # no segments
        disk.request(B.OP_READ, 0, [(ref, 0, 7)], nseg=200),         # too many segments
        disk.request(42, 0),                                         # unknown operation
        disk.request(B.OP_READ, 0, [(ref, 0, 7)]),                   # and a good one
    ]
    st = [s for _, _, s in disk.do(reqs)]
    assert st == [B.RSP_ERROR] * 7 + [B.RSP_EOPNOTSUPP, B.RSP_OKAY]
    assert disk.dev.state() == xenbus.CONNECTED
    disk.close()


def test_impossible_ring_indexes_shut_the_device_only(domain, xs, image):
    """A frontend claiming more requests than the ring holds: that device goes
    to Closing with an error node; another domain's disk carries on."""
    bad_dom, good_dom = domain(1), domain(2)
    bad = Disk(bad_dom, xs, image("a.img"))
    good = Disk(good_dom, xs, image("b.img"))
    struct.pack_into("<I", bad.ring.p, 0, 5000)
    bad.fe.notify(bad.port)
    bad.fe.wait_be_state(xenbus.CLOSING)
    assert "ring" in bad.fe.read_be("error")
    (frame, ref), = good.data_pages(1)
    r = good.request(B.OP_READ, 0, [(ref, 0, 7)])
    assert good.do([r])[0][2] == B.RSP_OKAY
    bad.close()
    good.close()


def test_frontend_closing_and_reconnecting(domain, xs, image):
    dom = domain()
    disk = Disk(dom, xs, image())
    disk.fe.write({"state": xenbus.CLOSING})
    disk.fe.wait_be_state(xenbus.CLOSING)
    disk.fe.write({"state": xenbus.CLOSED})
    disk.fe.wait_be_state(xenbus.CLOSED)
    # the frontend comes back (a module reload): InitWait, then connected again
    disk.fe.write({"state": xenbus.INITIALISING})
    disk.fe.wait_be_state(xenbus.INITWAIT)
    ref = disk.fe.init_ring(RING_FRAME + 1)
    disk.ring = RingWriter(disk.fe, RING_FRAME + 1, B.SLOT)
    disk.port = disk.fe.alloc_port()
    disk.fe.write({"ring-ref": ref, "event-channel": disk.port, "state": xenbus.INITIALISED})
    disk.fe.wait_be_state(xenbus.CONNECTED)
    (frame, gref), = disk.data_pages(1)
    assert disk.do([disk.request(B.OP_READ, 0, [(gref, 0, 7)])])[0][2] == B.RSP_OKAY
    disk.close()


def test_images_in_use_and_missing(domain, xs, image, tmp_path):
    a, b = domain(1), domain(2)
    path = image()
    da, db = DomainDevices(xs, LocalGuest(a)), DomainDevices(xs, LocalGuest(b))
    da.attach(VBD, parse_disk_spec(f"vdev=xvdb, target={path}"))
    with pytest.raises(DeviceConfigError, match="already in use"):
        db.attach(VBD, parse_disk_spec(f"vdev=xvdb, target={path}"))
    with pytest.raises(DeviceConfigError, match="already in use"):
        db.attach(VBD, parse_disk_spec(f"vdev=xvdb, access=ro, target={path}"))
    db.attach(VBD, parse_disk_spec(f"vdev=xvdb, target={path}"), force=True)
    with pytest.raises(DeviceConfigError, match="already has disk xvdb"):
        db.attach(VBD, parse_disk_spec(f"vdev=xvdb, target={path}"))
    with pytest.raises(DeviceConfigError, match="no such file"):
        db.attach(VBD, parse_disk_spec(f"vdev=xvdc, target={tmp_path / 'nope.img'}"))
    da.close_all()
    # once the writer is gone, two read-only users are fine
    ro = image("ro.img")
    da.attach(VBD, parse_disk_spec(f"vdev=xvdc, access=ro, target={ro}"))
    db.attach(VBD, parse_disk_spec(f"vdev=xvdc, access=ro, target={ro}"))
    da.close_all()
    db.close_all()


def test_qcow2_through_qemu_nbd(domain, xs, tmp_path):
    """A qcow2 image is served by QEMU's block layer (qemu-nbd); what the guest
    writes is in the image as qemu-img sees it."""
    q = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(q), "16M"], check=True)
    dom = domain()
    disk = Disk(dom, xs, q, spec_extra="format=qcow2, ")
    assert disk.fe.read_be("sectors") == str(16 * MiB // 512)
    pages = disk.data_pages(4)
    for i, (frame, _) in enumerate(pages):
        disk.fe.page(frame)[:] = bytes([0x30 + i]) * 4096
    w = disk.request(B.OP_WRITE, 2048, [(ref, 0, 7) for _, ref in pages])
    f = disk.request(B.OP_FLUSH)
    assert [s for _, _, s in disk.do([w, f])] == [0, 0]
    back = disk.data_pages(4, start=DATA_FRAME + 50)
    r = disk.request(B.OP_READ, 2048, [(ref, 0, 7) for _, ref in back])
    assert disk.do([r])[0][2] == 0
    assert bytes(disk.fe.page(back[3][0])) == bytes([0x33]) * 4096
    disk.close()
    raw = tmp_path / "out.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(q), str(raw)], check=True)
    data = raw.read_bytes()
    assert data[2048 * 512:2048 * 512 + 4 * 4096] == b"".join(bytes([0x30 + i]) * 4096
                                                            for i in range(4))
    assert subprocess.run(["qemu-img", "check", str(q)], capture_output=True).returncode == 0


def test_a_format_pyxen_cannot_read(domain, xs, image):
    dom = domain()
    devs = DomainDevices(xs, LocalGuest(dom))
    with pytest.raises(DeviceConfigError, match="not in qcow2 format"):
        devs.attach(VBD, parse_disk_spec(f"vdev=xvdb, format=qcow2, target={image()}"))
    assert xs.store.nodes.get(xenbus.backend_path("vbd", dom.domid, 51728)) is None
    devs.close_all()
