"""save / restore of HVM domains through QEMU's own migration stream (issue 19).

The guest is test_hvm.py's: Debian's unmodified kernel and pyxen's busybox
initramfs under QEMU's TCG, its shell on the emulated serial port. A counter
loop runs in the guest's shell (in /tmp, which is RAM, and on the console);
save -c keeps it running, save ends the domain, restore brings it back under
a new domid and the counter goes on from where it was - not from 1, as a
booted guest's would. A truncated file and a PV config are refused and
create nothing. Fails, never skips, without qemu-system-x86_64 or /dev/kvm.
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import sys
import time

from daemon_helpers import cli, env_for, rows, wait_until
from test_hvm import hvm_cfg

from pyxen.toolstack import hvm
from pyxen.toolstack.savefile import check_file


def uuid_of(rd, name: str) -> str:
    r = cli(rd, "list", "-l", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]["config"]["c_info"]["uuid"]


def counters(data: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"cnt-(\d+)\r?\n", data)]


def type_on_console(rd, name: str, text: bytes, log, marker: bytes, timeout: float) -> None:
    """Attach `pyxen console`, type text, wait for marker in the console log
    (past what it held before), detach."""
    before = log.stat().st_size
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(env_for(rd))
        os.execv(sys.executable, [sys.executable, "-m", "pyxen.cli", "console", name])
    try:
        time.sleep(2.0)                       # attached (raw mode flushes what came before)
        os.write(fd, text)

        got = bytearray()

        def seen():
            while select.select([fd], [], [], 0)[0]:
                try:
                    got.extend(os.read(fd, 65536))
                except OSError:
                    break
            with open(log, "rb") as f:
                f.seek(before)
                return marker in f.read()
        assert wait_until(seen, timeout), (log.read_bytes()[-800:], bytes(got[-800:]))
        os.write(fd, b"\x1d")
        assert wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] != 0, 10)
        pid = 0
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


def test_hvm_save_checkpoint_restore(rd, tmp_path, linux_images):
    assert shutil.which(hvm.QEMU), "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
    t0 = time.monotonic()
    cfg = hvm_cfg(tmp_path, linux_images, name="hvms")
    r = cli(rd, "create", cfg)
    assert r.returncode == 0, r.stderr
    old = rows(rd)["hvms"]
    old_uuid = uuid_of(rd, "hvms")
    log = rd / "log" / "guest-hvms.log"
    assert wait_until(lambda: log.exists() and b"pyxen:/# " in log.read_bytes(), 50)
    type_on_console(rd, "hvms", b"i=0; while true; do i=$((i+1)); echo $i > /tmp/c; "
                    b"echo cnt-$i; sleep 0.5; done &\r", log, b"cnt-3", 20)

    # save -c: the file is written, the domain goes on (the counter too);
    # pyxen save, as xl's, from the CLI with its descriptor of the file
    save = tmp_path / "hvms.save"
    r = cli(rd, "save", "-c", "hvms", str(save))
    assert r.returncode == 0, r.stderr
    hdr = check_file(str(save))
    assert hdr.info["name"] == "hvms" and hdr.config["type"] == "hvm"
    assert hdr.info["nr_pages"] == 256 * 256 and hdr.info["vcpus"] == 1
    assert rows(rd)["hvms"]["id"] == old["id"]
    n = max(counters(log.read_bytes()))
    assert wait_until(lambda: max(counters(log.read_bytes())) >= n + 2, 15), \
        "the counter stopped after save -c"

    # save -p: the domain stays, paused (QEMU stopped)
    r = cli(rd, "save", "-p", "hvms", str(save))
    assert r.returncode == 0, r.stderr
    assert rows(rd)["hvms"]["state"] == "--p---", rows(rd)
    assert cli(rd, "unpause", "hvms").returncode == 0
    assert rows(rd)["hvms"]["state"] in ("r-----", "-b----"), rows(rd)

    # save: the domain is gone
    r = cli(rd, "save", "hvms", str(save))
    assert r.returncode == 0, r.stderr
    assert "hvms" not in rows(rd)
    saved_at = max(counters(log.read_bytes()))
    size = save.stat().st_size
    assert size < 200 << 20, size               # QEMU skips zero pages

    # a truncated file, and a PV config with an HVM file: refused, nothing created
    trunc = tmp_path / "trunc.save"
    with open(save, "rb") as f, open(trunc, "wb") as g:
        g.write(f.read(size - 1000))
    r = cli(rd, "restore", str(trunc))
    assert r.returncode != 0 and "truncated" in r.stderr, r.stderr
    pv = tmp_path / "pv.cfg"
    pv.write_text(f'name = "hvms"\nmemory = 256\nvcpus = 1\nkernel = "{linux_images.kernel}"\n'
                  f'ramdisk = "{linux_images.initrd}"\n')
    r = cli(rd, "restore", str(pv), str(save))
    assert r.returncode != 0 and "holds a HVM domain" in r.stderr, r.stderr
    assert [n for n in rows(rd) if n != "Domain-0"] == []

    # restore: a new domid, same name and uuid, the counter goes on from where it was
    mark = log.stat().st_size
    t1 = time.monotonic()
    r = cli(rd, "restore", str(save))
    assert r.returncode == 0, r.stderr
    restore_s = time.monotonic() - t1
    new = rows(rd)["hvms"]
    assert new["id"] != old["id"] and uuid_of(rd, "hvms") == old_uuid, (old, new)

    def after():
        with open(log, "rb") as f:
            f.seek(mark)
            return counters(f.read())
    assert wait_until(lambda: len(after()) >= 3, 15), log.read_bytes()[-800:]
    assert saved_at < after()[0] <= saved_at + 3, (saved_at, after())
    type_on_console(rd, "hvms", b"echo back-$((20+3))-$(cat /tmp/c)\r", log, b"back-23-", 15)
    assert cli(rd, "destroy", "hvms").returncode == 0
    print(f"HVM save/restore test: {time.monotonic() - t0:.1f} s, restore {restore_s:.1f} s, "
          f"file {size >> 20} MiB")


def test_hvm_migrate_to_relocation_server(rd, tmp_path, linux_images):
    """pyxen migrate of an HVM domain to a second pyxend's relocation server:
    QEMU's live migration inside pyxen's READY/GO/DONE hand-shake; the
    counter goes on there, the source is gone."""
    assert shutil.which(hvm.QEMU), "qemu-system-x86_64 is missing (apt-get install qemu-system-x86)"
    import signal
    from daemon_helpers import daemon_pid, start_daemon
    t0 = time.monotonic()
    d2 = tmp_path / "run2"
    d2.mkdir()
    proc = start_daemon(d2, args=("--relocation-port", "0",
                                  "--relocation-hosts-allow", r"^127\.0\.0\.1$"))
    try:
        assert wait_until(lambda: (d2 / "relocation.port").exists())
        port = int((d2 / "relocation.port").read_text())
        cfg = hvm_cfg(tmp_path, linux_images, name="hvmm")
        r = cli(rd, "create", cfg)
        assert r.returncode == 0, r.stderr
        log = rd / "log" / "guest-hvmm.log"
        assert wait_until(lambda: log.exists() and b"pyxen:/# " in log.read_bytes(), 50)
        type_on_console(rd, "hvmm", b"i=0; while true; do i=$((i+1)); echo cnt-$i; "
                        b"sleep 0.5; done &\r", log, b"cnt-3", 20)

        # the target cannot take the name at GO (it has a domain called so):
        # the migration fails after QEMU's stream went over; the source goes on
        assert cli(d2, "create", "-p", cfg).returncode == 0
        r = cli(rd, "migrate", "hvmm", f"tcp://127.0.0.1:{port}", timeout=120)
        assert r.returncode != 0 and "carries on here" in r.stderr, r.stderr
        print(r.stderr.strip())
        assert rows(rd)["hvmm"]["state"] in ("r-----", "-b----"), rows(rd)
        n = max(counters(log.read_bytes()))
        assert wait_until(lambda: max(counters(log.read_bytes())) >= n + 2, 15), \
            "the source's counter stopped after a failed migration"
        assert list(rows(d2)) == ["Domain-0", "hvmm"], rows(d2)
        assert cli(d2, "destroy", "hvmm").returncode == 0
        r = cli(rd, "migrate", "hvmm", f"tcp://127.0.0.1:{port}", timeout=120)
        assert r.returncode == 0, r.stderr
        assert "Migration successful" in r.stderr, r.stderr
        assert "hvmm" not in rows(rd)
        assert rows(d2)["hvmm"]["state"] in ("r-----", "-b----"), rows(d2)
        sent_at = max(counters(log.read_bytes()))

        def there():
            logs = list((d2 / "log").glob("guest-hvmm*.log"))
            return counters(b"".join(p.read_bytes() for p in logs))
        assert wait_until(lambda: len(there()) >= 3, 15), there()
        assert sent_at < min(there()) <= sent_at + 3, (sent_at, there())
        assert cli(d2, "destroy", "hvmm").returncode == 0
    finally:
        r = cli(d2, "list")
        for line in r.stdout.splitlines()[2:]:
            cli(d2, "destroy", line.split()[1])
        proc.kill()
        proc.wait()
        while (pid := daemon_pid(d2)) is not None:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
    print(f"HVM migrate test: {time.monotonic() - t0:.1f} s")
