"""qcow2 (and the other non-raw formats) through qemu-nbd and libnbd's Python
binding: the client is libnbd, blkback keeps the requests it takes from the
ring together in flight, a flush still follows the writes before it, and
failures (qemu-nbd gone, a read past the end) say what happened."""
from __future__ import annotations

import os
import signal
import struct
import subprocess

import pytest

from pyxen.dom0.backends import blkback as B
from pyxen.dom0.backends import nbd as N
from pyxen.dom0.backends.image import open_image

from test_blkback import Disk, MiB, domain, xs  # noqa: F401   (fixtures)


def qcow2(tmp_path, size="16M"):
    q = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(q), size], check=True)
    return q


def test_the_client_is_libnbd(tmp_path):
    img = open_image(str(qcow2(tmp_path)), "qcow2", readonly=False)
    try:
        assert isinstance(img, N.QemuNbdImage)
        assert type(img.h).__module__ == "nbd" and type(img.h).__name__ == "NBD"
        assert img.h.get_size() == 16 * MiB and img.sectors == 16 * MiB // 512
        pages = [memoryview(bytearray(bytes([i]) * 4096)) for i in range(3)]
        img.writev(pages, 8192)
        back = [memoryview(bytearray(4096)) for _ in range(3)]
        cmds = [img.submit(False, [b], 8192 + 4096 * i) for i, b in enumerate(back)]
        for c in cmds:
            img.wait(c)
        assert [bytes(b) for b in back] == [bytes([i]) * 4096 for i in range(3)]
    finally:
        img.close()
    assert img.proc.poll() is not None and not os.path.exists(img.dir)


def test_errors_say_what_happened(tmp_path):
    img = N.QemuNbdImage(str(qcow2(tmp_path)), "qcow2", readonly=False)
    try:
        with pytest.raises(OSError, match=r"4096 bytes at 16777216 beyond the end of .*disk.qcow2 "
                                          r"\(16777216 bytes\)"):
            img.readv([bytearray(4096)], 16 * MiB)
        with pytest.raises(OSError, match="beyond the end"):
            img.submit(True, [bytearray(8192)], 16 * MiB - 4096)
        os.kill(img.proc.pid, signal.SIGKILL)
        img.proc.wait()
        with pytest.raises(OSError, match="qemu-nbd closed the connection"):
            img.readv([bytearray(4096)], 0)
        with pytest.raises(OSError, match="qemu-nbd closed the connection"):
            img.wait(img.submit(False, [bytearray(4096)], 0))
        with pytest.raises(OSError, match="qemu-nbd closed the connection"):
            img.flush()
    finally:
        img.close()


def test_not_the_format_or_missing_binding(tmp_path, monkeypatch):
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(MiB))
    with pytest.raises(Exception, match="cannot open it as qcow2"):
        N.QemuNbdImage(str(raw), "qcow2", readonly=False)

    def missing():
        raise ImportError("no python3-libnbd")
    monkeypatch.setattr(N.libnbd_import, "load", missing)
    with pytest.raises(Exception, match="needs libnbd's Python binding: no python3-libnbd"):
        N.QemuNbdImage(str(qcow2(tmp_path)), "qcow2", readonly=False)


def test_blkback_keeps_requests_in_flight_and_flushes_after_them(domain, xs, tmp_path,
                                                                 monkeypatch):
    """Requests published together are submitted together; a flush among them
    waits until the writes before it have completed, and the writes after it
    go out after the flush."""
    log = []
    sub, wait, sync = N.QemuNbdImage.submit, N.QemuNbdImage.wait, N.QemuNbdImage._sync

    def submit(self, write, bufs, offset):
        c = sub(self, write, bufs, offset)
        log.append(("submit", "w" if write else "r", offset, c.cookie))
        return c

    def waited(self, cmd):
        wait(self, cmd)
        log.append(("done", cmd.cookie))

    def sync_(self, what, call, *args):
        log.append(("sync", what))
        return sync(self, what, call, *args)
    monkeypatch.setattr(N.QemuNbdImage, "submit", submit)
    monkeypatch.setattr(N.QemuNbdImage, "wait", waited)
    monkeypatch.setattr(N.QemuNbdImage, "_sync", sync_)

    q = qcow2(tmp_path)
    disk = Disk(domain(), xs, q, spec_extra="format=qcow2, ")
    pages = disk.data_pages(6)
    for i, (frame, _) in enumerate(pages):
        disk.fe.page(frame)[:] = bytes([0x40 + i]) * 4096
    reqs = [disk.request(B.OP_WRITE, 8 * i, [(pages[i][1], 0, 7)]) for i in range(4)]
    reqs.append(disk.request(B.OP_FLUSH))
    reqs += [disk.request(B.OP_WRITE, 8 * i, [(pages[i][1], 0, 7)]) for i in (4, 5)]
    reqs.append(disk.request(B.OP_READ, 16 * MiB // 512, [(pages[0][1], 0, 7)]))
    for _, raw in reqs[:-1]:
        disk.ring.push(raw, disk.port, publish=False)
    disk.ring.push(reqs[-1][1], disk.port)                     # all published at once
    got = {rid: st for rid, _, st in (struct.unpack_from("<QBxh", r)
                                      for r in disk.ring.responses(len(reqs)))}
    assert [got[rid] for rid, _ in reqs] == [0] * 7 + [B.RSP_ERROR]   # the last: past the end
    kinds = [e[0] for e in log]
    at_flush = log.index(("sync", "flush"))
    # the four writes were all in flight before the first completed
    assert kinds[:4] == ["submit"] * 4 and kinds[4:8] == ["done"] * 4 and at_flush == 8
    assert [e[1] for e in log[at_flush + 1:] if e[0] == "submit"] == ["w", "w"]
    disk.close()
    out = tmp_path / "out.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(q), str(out)], check=True)
    data = out.read_bytes()
    assert data[:6 * 4096] == b"".join(bytes([0x40 + i]) * 4096 for i in (0, 1, 2, 3, 4, 5))
