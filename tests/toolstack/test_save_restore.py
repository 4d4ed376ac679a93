"""Save and restore (issue 16): the save file, the suspend protocol, a
restored guest carrying on. guests/suspend.c counts on its console ring
and suspends when control/shutdown says so."""
from __future__ import annotations

import os
import re
import threading
import time

import pytest

from pyxen.toolstack.builder import CreateError, LocalServices, build_domain, close_domain
from pyxen.toolstack.domconfig import DomainConfig
from pyxen.toolstack import savefile
from guest_helpers import Console


def _counts(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"^count (\d+)", text, re.M)]


def _times(text: str) -> list[int]:
    """The guest's system time (ms) at each count."""
    return [int(x) for x in re.findall(r"^count \d+ t=(\d+)", text, re.M)]


def _wait(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return pred()


def _start(kvm, cfg, restore=None):
    out = Console()
    reader = savefile.SaveReader(restore) if restore else None
    try:
        dom = build_domain(cfg, LocalServices(out.extend, devices=False), console_io=out.extend,
                           kvm=kvm, restore=reader)
    finally:
        if reader is not None:
            reader.close()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", dom.run()), daemon=True)
    t.start()
    return dom, out, t, result


def _xs_write(dom, rel: str, value: str) -> None:
    from pyxen.dom0.xenstore.store import Client
    xs = dom.dom0.xenstore
    with xs.access() as store:
        store.write(Client(store, 0, True), f"/local/domain/{dom.domid}/{rel}", value.encode())


def _suspend(dom) -> None:
    ev = threading.Event()
    dom.on_suspend = ev.set
    _xs_write(dom, "control/shutdown", "suspend")
    assert ev.wait(20), "the guest did not suspend"
    dom.on_suspend = None
    assert dom.wait_parked(10)


def _cfg(elf, **kw):
    return DomainConfig(name="sr", kernel=str(elf), cmdline="period_ms=20", memory=32, **kw)


def test_save_restore_counter_continues(kvm, guest_elf, tmp_path):
    """The counter goes on after a restore into a new domain, from where it
    stopped; the file refuses to restore once truncated."""
    cfg = _cfg(guest_elf("suspend"))
    dom, out, t, _ = _start(kvm, cfg)
    try:
        assert _wait(lambda: len(_counts(out.text)) >= 10), out.text
        _suspend(dom)
        # a ballooned-out frame stays out (mini-OS uses nothing this high)
        gone = dom.nr_pages - 3
        assert dom.release_frame(gone)
        path = str(tmp_path / "sr.save")
        res = savefile.write_domain(dom, path, cfg.to_dict())
        assert res["bytes"] == os.path.getsize(path)
        assert os.stat(path).st_mode & 0o777 == 0o600
        before = _counts(out.text)[-1]
        t_before = _times(out.text)[-1]
        saved_at = time.monotonic()
        dom.destroy()
        t.join(10)
    finally:
        close_domain(dom)
    assert res["bytes"] < 32 << 20            # zero runs are not written out

    hdr = savefile.check_file(path)
    assert hdr.info["name"] == "sr" and hdr.info["nr_pages"] == 32 * 256

    dom2, out2, t2, result = _start(kvm, cfg, restore=path)
    try:
        assert not dom2.mm.present[gone] and dom2.nr_present == dom2.nr_pages - 1
        assert dom2.heap.get_m2p(gone) == (1 << 64) - 1 and dom2.heap.get_m2p(gone - 1) == gone - 1
        assert _wait(lambda: "resumed in a new domain" in out2.text), out2.text
        assert _wait(lambda: len(_counts(out2.text)) >= 5), out2.text
        after = _counts(out2.text)
        assert after[0] == before + 1, (before, after[:3])
        # system time (pvclock) went on from where it was: no jump back, and
        # forward by no more than the time the domain was away
        t_after = _times(out2.text)
        assert t_before < t_after[0] <= t_before + (time.monotonic() - saved_at) * 1000 + 100
        assert t_after == sorted(t_after)
        assert after == list(range(after[0], after[0] + len(after)))
        _xs_write(dom2, "control/shutdown", "poweroff")
        t2.join(20)
        assert result["r"].reason == "poweroff", out2.text
        assert "Test result: SUCCESS" in out2.text
    finally:
        dom2.destroy()
        close_domain(dom2)


def test_checkpoint_resumes_same_domain(kvm, guest_elf, tmp_path):
    """save -c: the guest's suspend hypercall returns 1 and it carries on
    in the same domain (its kernel has SUSPEND_CANCEL)."""
    cfg = _cfg(guest_elf("suspend"))
    dom, out, t, result = _start(kvm, cfg)
    try:
        assert dom.suspend_cancel
        assert _wait(lambda: len(_counts(out.text)) >= 5), out.text
        _suspend(dom)
        savefile.write_domain(dom, str(tmp_path / "cp.save"), cfg.to_dict())
        n = len(_counts(out.text))
        dom.resume_suspended(cancelled=True)
        dom.unpause()
        assert _wait(lambda: "cancelled, same domain (rc 1)" in out.text), out.text
        assert _wait(lambda: len(_counts(out.text)) >= n + 5), out.text
        c = _counts(out.text)
        assert c == list(range(len(c)))
        _xs_write(dom, "control/shutdown", "poweroff")
        t.join(20)
        assert result["r"].reason == "poweroff"
    finally:
        dom.destroy()
        close_domain(dom)
    savefile.check_file(str(tmp_path / "cp.save"))


def test_bogus_start_info_frame_refused(kvm, guest_elf, tmp_path):
    """The start_info frame a guest names in its suspend hypercall is checked
    before a file is written (as Xen's save does); the guest resumes."""
    from pyxen.hv.savestate import SaveError
    cfg = DomainConfig(name="liar", kernel=str(guest_elf("suspend")),
                       cmdline="period_ms=20 bad_si=1", memory=32)
    dom, out, t, result = _start(kvm, cfg)
    try:
        assert _wait(lambda: len(_counts(out.text)) >= 2), out.text
        _suspend(dom)
        path = tmp_path / "liar.save"
        with pytest.raises(SaveError, match="not a start_info page"):
            savefile.write_domain(dom, str(path), cfg.to_dict())
        assert not path.exists()
        dom.unpause()                           # refused while suspended
        assert dom.paused
        dom.resume_suspended(cancelled=True)
        dom.unpause()
        assert _wait(lambda: "cancelled, same domain" in out.text), out.text
    finally:
        dom.destroy()
        t.join(10)
        close_domain(dom)


def test_save_streams_memory(kvm, guest_elf, tmp_path):
    """A 512 MiB guest is written 64 KiB at a time: the saving process's own
    (anonymous) memory does not grow with the guest's."""
    def rss_anon_kb():
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
        return 0
    cfg = DomainConfig(name="big", kernel=str(guest_elf("suspend")), cmdline="period_ms=20",
                       memory=512)
    dom, out, t, _ = _start(kvm, cfg)
    try:
        assert _wait(lambda: len(_counts(out.text)) >= 2), out.text
        # non-zero data all over the guest's free memory, as a busy guest has
        ram = dom.ram.view
        for off in range(64 << 20, 512 << 20, 1 << 20):
            ram[off:off + 4096] = b"\xa5" * 4096
        _suspend(dom)
        before = rss_anon_kb()
        path = str(tmp_path / "big.save")
        res = savefile.write_domain(dom, path, cfg.to_dict())
        grown = rss_anon_kb() - before
        assert res["memory_bytes"] >= 448 * 16 * 4096
        assert grown < 32 * 1024, f"RssAnon grew by {grown} KiB while saving"
        dom.destroy()
        t.join(10)
    finally:
        close_domain(dom)
    dom2, out2, t2, _ = _start(kvm, cfg, restore=path)
    try:
        assert bytes(dom2.ram.view[100 << 20:(100 << 20) + 4096]) == b"\xa5" * 4096
        assert _wait(lambda: "resumed in a new domain" in out2.text), out2.text
    finally:
        dom2.destroy()
        t2.join(10)
        close_domain(dom2)


def _rewrite_state(path: str, change) -> None:
    """Rewrite a save file's STATE record with change(state) applied and
    its checksum made right again: a file forged by whoever can write it."""
    import base64
    import json
    import struct
    import zlib
    data = open(path, "rb").read()
    jlen = struct.unpack_from("<I", data, 16)[0]
    off = 32 + jlen
    rtype, _, length, _ = struct.unpack_from("<IIQI4x", data, off)
    assert rtype == savefile.R_STATE
    state = json.loads(data[off + 24:off + 24 + length])
    change(state, base64)
    blob = json.dumps(state).encode()
    rest = data[off + 24 + length:]
    head = data[:off] + struct.pack("<IIQI4x", rtype, 0, len(blob), zlib.crc32(blob)) + blob
    # the END record names its own offset
    body = head + rest[:-savefile.END_SIZE]
    payload = struct.pack("<QQ", struct.unpack_from("<Q", rest, len(rest) - 16)[0], len(body))
    end = struct.pack("<IIQI4x", savefile.R_END, 0, len(payload), zlib.crc32(payload)) + payload
    open(path, "wb").write(body + end)


def _ring0_cs(state, b64):
    from pyxen.kvm import structs as KS
    v = state["vcpus"][0]
    s = KS.Sregs.from_buffer_copy(b64.b64decode(v["sregs"]))
    s.cs.selector, s.cs.dpl = 0xE008, 0
    v["sregs"] = b64.b64encode(bytes(s)).decode()


def _hole_handler(state, b64):
    state["vcpus"][0]["pv"]["trap_table"].append([14, 0, 0xE033, 0xFFFF800000001000])


def _data_as_l4(state, b64):
    # another frame of the guest (next to its L4), as if it had been pinned as an L4
    state["pins"].append([state["vcpus"][0]["pv"]["kernel_l4"] - 1, 4])


def _lying_start_info(state, b64):
    state["start_info_mfn"] = 1 << 40


@pytest.mark.parametrize("forge,msg", [(_ring0_cs, "not a guest segment"),
                                       (_hole_handler, "trap handler .* refused"),
                                       (_data_as_l4, "does not validate"),
                                       (_lying_start_info, "start_info frame")])
def test_forged_state_refused(kvm, guest_elf, tmp_path, forge, msg):
    """Nothing in a save file is taken on trust: a forged state (checksums
    recomputed) that would run the guest at CPL0, hand it a trap handler
    in the hypervisor hole, make a data frame a page table or point
    start_info elsewhere is refused by the same checks the hypercalls make."""
    cfg = _cfg(guest_elf("suspend"))
    dom, out, t, _ = _start(kvm, cfg)
    path = str(tmp_path / "f.save")
    try:
        assert _wait(lambda: len(_counts(out.text)) >= 2), out.text
        _suspend(dom)
        savefile.write_domain(dom, path, cfg.to_dict())
        dom.destroy()
        t.join(10)
    finally:
        close_domain(dom)
    _rewrite_state(path, forge)
    savefile.check_file(path)               # a well-formed file...
    with pytest.raises(CreateError, match=msg):
        _start(kvm, cfg, restore=path)      # ...whose state does not pass


@pytest.mark.parametrize("damage", ["truncate", "foreign", "version", "empty", "flip"])
def test_bad_files_refused(kvm, guest_elf, tmp_path, damage):
    """A truncated, foreign, newer or damaged file is refused with a clear
    message, before (check_file) or while (the records' checksums) it is read."""
    cfg = _cfg(guest_elf("suspend"))
    dom, out, t, _ = _start(kvm, cfg)
    path = str(tmp_path / "x.save")
    try:
        assert _wait(lambda: len(_counts(out.text)) >= 2), out.text
        _suspend(dom)
        savefile.write_domain(dom, path, cfg.to_dict())
        dom.destroy()
        t.join(10)
    finally:
        close_domain(dom)
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
        data = data[:len(data) // 2]
        msg = "truncated"
    elif damage == "foreign":
        data[:8] = b"\x7fELF\x02\x01\x01\x00"
        msg = "not a pyxen save file"
    elif damage == "version":
        data[8] = 99
        msg = "version 99"
    elif damage == "empty":
        data = bytearray()
        msg = "not a pyxen save file"
    else:
        data[len(data) // 2] ^= 0xFF      # somewhere in memory: only the checksum sees it
        msg = "damaged"
    open(path, "wb").write(bytes(data))
    with pytest.raises((savefile.SaveFileError, CreateError), match=msg):
        savefile.check_file(path)
        _start(kvm, cfg, restore=path)


# --- through pyxend and the CLI ------------------------------------------------------------
def _cfg_file(tmp_path, guest_elf, name="counter"):
    p = tmp_path / f"{name}.cfg"
    p.write_text(f'name = "{name}"\nkernel = "{guest_elf("suspend")}"\nmemory = 32\n'
                 f'extra = "period_ms=20"\n')
    return p


def _log_counts(rd, name="counter"):
    try:
        return _counts((rd / "log" / f"guest-{name}.log").read_text(errors="replace"))
    except OSError:
        return []


def test_cli_save_restore(rd, tmp_path, guest_elf):
    """pyxen save DOM FILE: the domain is gone and FILE holds it; pyxen
    restore FILE: it counts on from where it was (same console log)."""
    from daemon_helpers import cli, rows, wait_until, xs
    assert cli(rd, "create", str(_cfg_file(tmp_path, guest_elf))).returncode == 0
    assert wait_until(lambda: len(_log_counts(rd)) >= 10, 20)
    assert cli(rd, "mem-max", "counter", "40m").returncode == 0
    assert cli(rd, "mem-set", "counter", "24m").returncode == 0
    save = tmp_path / "counter.save"
    r = cli(rd, "save", "counter", str(save))
    assert r.returncode == 0, r.stderr
    assert "counter" not in rows(rd)
    before = _log_counts(rd)[-1]
    assert savefile.check_file(str(save)).info["name"] == "counter"
    r = cli(rd, "restore", str(save))
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: "counter" in rows(rd))
    assert wait_until(lambda: _log_counts(rd)[-1] >= before + 10, 20), _log_counts(rd)[-5:]
    c = _log_counts(rd)
    assert c == list(range(len(c))), "the count restarted or skipped"
    # the memory target and maximum come back as they were set
    assert rows(rd)["counter"]["mem"] == 24
    domid = str(rows(rd)["counter"]["id"])
    assert xs(rd, "xenstore-read", f"/local/domain/{domid}/memory/target").stdout.strip() \
        == str(24 * 1024)
    assert xs(rd, "xenstore-read", f"/local/domain/{domid}/memory/static-max").stdout.strip() \
        == str(40 * 1024)
    log = (rd / "log" / "guest-counter.log").read_text()
    assert "resumed in a new domain (rc 0)" in log


def test_abandoned_save_resumes_the_guest(rd, tmp_path, guest_elf):
    """A saver that goes away after the guest suspended (pyxend killed
    midway) leaves a running guest, not one paused for good."""
    from daemon_helpers import cli, rows, wait_until, xs
    from pyxen.toolstack import paths
    from pyxen.toolstack.rpc import Connection
    assert cli(rd, "create", str(_cfg_file(tmp_path, guest_elf))).returncode == 0
    assert wait_until(lambda: len(_log_counts(rd)) >= 5, 20)
    domid = rows(rd)["counter"]["id"]
    conn = Connection.connect(paths.domain_socket(rd, domid), timeout=30)
    conn.call("suspend_arm")
    assert xs(rd, "xenstore-write", f"/local/domain/{domid}/control/shutdown",
              "suspend").returncode == 0
    assert conn.call("suspend_wait", timeout=20)["suspended"]
    n = len(_log_counts(rd))
    time.sleep(0.5)
    assert len(_log_counts(rd)) == n                    # suspended: not counting
    assert rows(rd)["counter"]["state"] == "---ss-"     # as xl shows a suspended domain
    assert cli(rd, "unpause", "counter").returncode == 0
    time.sleep(0.3)
    assert len(_log_counts(rd)) == n                    # and unpause does not change that
    conn.close()
    assert wait_until(lambda: len(_log_counts(rd)) >= n + 5, 20)
    assert "cancelled, same domain (rc 1)" in (rd / "log" / "guest-counter.log").read_text()


def test_failed_save_resumes_the_domain(rd, tmp_path, guest_elf):
    """A save that fails once the guest suspended (here: it named a frame
    that is not its start_info) resumes the domain, as xl does."""
    from daemon_helpers import cli, rows, wait_until
    cfg = tmp_path / "liar.cfg"
    cfg.write_text(f'name = "counter"\nkernel = "{guest_elf("suspend")}"\nmemory = 32\n'
                   f'extra = "period_ms=20 bad_si=1"\n')
    assert cli(rd, "create", str(cfg)).returncode == 0
    assert wait_until(lambda: len(_log_counts(rd)) >= 5, 20)
    r = cli(rd, "save", "counter", str(tmp_path / "liar.save"))
    assert r.returncode != 0 and "the domain was resumed" in r.stderr, r.stderr
    assert "not a start_info page" in r.stderr
    n = len(_log_counts(rd))
    assert wait_until(lambda: len(_log_counts(rd)) >= n + 5, 20)
    assert "counter" in rows(rd)
    assert "cancelled, same domain (rc 1)" in (rd / "log" / "guest-counter.log").read_text()


def test_api_takes_descriptors_only(rd, tmp_path, guest_elf):
    """save and restore work on the descriptors the client sends: without
    one, or with one of the wrong kind, they are refused."""
    from daemon_helpers import cli, wait_until
    from pyxen.toolstack.client import Client, RpcError
    assert cli(rd, "create", str(_cfg_file(tmp_path, guest_elf))).returncode == 0
    assert wait_until(lambda: len(_log_counts(rd)) >= 2, 20)
    target = tmp_path / "x.save"
    with Client(rd) as c:
        with pytest.raises(RpcError, match="must carry the file's descriptor"):
            c.call("save", dom="counter", path=str(target))
        fd = os.open(str(target), os.O_RDONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(RpcError, match="not a regular file open for writing"):
                c.conn.call("save", _fds=(fd,), dom="counter", path=str(target))
        finally:
            os.close(fd)
        with pytest.raises(RpcError, match="must carry the file's descriptor"):
            c.call("restore", path=str(target))
    assert target.stat().st_size == 0


def test_cli_checkpoint_and_refused_files(rd, tmp_path, guest_elf):
    """save -c leaves the domain running (hypercall returned 1); save -p
    leaves it paused; a truncated or foreign file is refused by restore and
    nothing is created."""
    from daemon_helpers import cli, rows, wait_until
    assert cli(rd, "create", str(_cfg_file(tmp_path, guest_elf))).returncode == 0
    assert wait_until(lambda: len(_log_counts(rd)) >= 5, 20)
    cp = tmp_path / "cp.save"
    r = cli(rd, "save", "-c", "counter", str(cp))
    assert r.returncode == 0, r.stderr
    assert "counter" in rows(rd)
    n = len(_log_counts(rd))
    assert wait_until(lambda: len(_log_counts(rd)) >= n + 5, 20)
    assert "cancelled, same domain (rc 1)" in (rd / "log" / "guest-counter.log").read_text()
    r = cli(rd, "save", "-p", "counter", str(tmp_path / "p.save"))
    assert r.returncode == 0, r.stderr
    assert rows(rd)["counter"]["state"][2] == "p"
    r = cli(rd, "save", "counter", str(tmp_path / "p2.save"))
    assert r.returncode != 0 and "is paused" in r.stderr, r.stderr
    # the name is taken: restoring the checkpoint beside it is refused
    r = cli(rd, "restore", str(cp))
    assert r.returncode != 0 and "already exists" in r.stderr
    data = cp.read_bytes()
    bad = tmp_path / "bad.save"
    bad.write_bytes(data[:len(data) - 4096])
    before = set(rows(rd))
    r = cli(rd, "restore", str(bad))
    assert r.returncode != 0 and "truncated" in r.stderr, r.stderr
    r = cli(rd, "restore", str(_cfg_file(tmp_path, guest_elf)))
    assert r.returncode != 0 and "not a pyxen save file" in r.stderr, r.stderr
    # damage that only the records' checksums see: the domain process fails
    # while reading, and pyxend keeps nothing of it
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    bad.write_bytes(bytes(flipped))
    r = cli(rd, "restore", str(_cfg_file(tmp_path, guest_elf, "other")), str(bad))
    assert r.returncode != 0 and "damaged" in r.stderr, r.stderr
    assert set(rows(rd)) == before
    # a file the user cannot create: refused before anything happens (xl's
    # "Failed to open ... for writing"); pyxend opens no file for a client
    assert cli(rd, "unpause", "counter").returncode == 0
    n = len(_log_counts(rd))
    r = cli(rd, "save", "counter", str(tmp_path / "no" / "such" / "dir.save"))
    assert r.returncode != 0 and "Failed to open" in r.stderr, r.stderr
    assert wait_until(lambda: len(_log_counts(rd)) >= n + 5, 20)
    assert rows(rd)["counter"]["state"][2] != "p"
    assert cli(rd, "destroy", "counter").returncode == 0
    # with the original gone, the checkpoint restores beside nothing
    r = cli(rd, "restore", "-p", str(cp))
    assert r.returncode == 0, r.stderr
    assert rows(rd)["counter"]["state"][2] == "p"


def test_restore_keeps_vcpu_set_and_applies_xl_conf(rd, tmp_path, guest_elf, monkeypatch):
    """vcpu-set is kept in the domain's config as libxl keeps avail_vcpus: a
    save takes it along and restore brings those vCPUs online again; restore
    with a config file applies xl.conf's defaults to it, as create does."""
    import json
    from daemon_helpers import cli, rows, wait_until, xs
    cfg = tmp_path / "v.cfg"
    cfg.write_text(f'name = "v"\nkernel = "{guest_elf("suspend")}"\nmemory = 32\n'
                   'extra = "period_ms=20"\nvcpus = 1\nmaxvcpus = 2\n')
    assert cli(rd, "create", str(cfg)).returncode == 0
    assert wait_until(lambda: len(_log_counts(rd, "v")) >= 5, 20)
    assert cli(rd, "vcpu-set", "v", "2").returncode == 0
    save = tmp_path / "v.save"
    assert cli(rd, "save", "v", str(save)).returncode == 0
    assert savefile.check_file(str(save)).config["vcpus"] == 2
    conf = tmp_path / "xl.conf"
    conf.write_text("max_maptrack_frames = 256\n")
    monkeypatch.setenv("PYXEN_XL_CONF", str(conf))
    r = cli(rd, "restore", str(cfg), str(save))
    assert r.returncode == 0, r.stderr
    domid = rows(rd)["v"]["id"]
    b = json.loads(cli(rd, "list", "-l", "v").stdout)[0]["config"]["b_info"]
    assert b["max_maptrack_frames"] == 256          # xl.conf's default, as create
    assert xs(rd, "xenstore-read", f"/local/domain/{domid}/cpu/1/availability").stdout.strip() \
        == "offline"                                # the given config: vcpus = 1
    r = cli(rd, "restore", str(save))               # the saved config: both online
    assert r.returncode == 1 and "already exists" in r.stderr
    assert cli(rd, "destroy", "v").returncode == 0
    assert cli(rd, "restore", str(save)).returncode == 0
    domid = rows(rd)["v"]["id"]
    assert xs(rd, "xenstore-read", f"/local/domain/{domid}/cpu/1/availability").stdout.strip() \
        == "online"
