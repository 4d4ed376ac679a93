"""Live migration (issue 16) between two pyxend instances on this host, each
with its own run directory, with mini-OS's suspend guest (it counts on its
console and suspends when control/shutdown says so): through `-s ''`
(a command instead of ssh) and through the relocation server (tcp://);
a migration that dies midway leaves the source running; the relocation
server's allow-list; the log-dirty mode and the stream's checks."""
from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from daemon_helpers import cli, daemon_pid, env_for, rows, start_daemon, wait_until
from pyxen.toolstack import migration


def _counts(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"^count (\d+)", text, re.M)]


def _log(rd: Path) -> str:
    """Every console log of the run directory (a received domain logs under
    the name it had while it came in)."""
    return "".join(p.read_text(errors="replace") for p in sorted((rd / "log").glob("guest-*.log")))


@pytest.fixture
def rd2(tmp_path, kvm):
    """A second pyxend, with a relocation server on a free port that takes
    connections from 127.0.0.1 only."""
    d = tmp_path / "run2"
    d.mkdir()
    proc = start_daemon(d, args=("--relocation-port", "0",
                                 "--relocation-hosts-allow", r"^127\.0\.0\.1$"))
    assert wait_until(lambda: (d / "relocation.port").exists())
    yield d
    r = cli(d, "list")
    for line in r.stdout.splitlines()[2:]:
        cli(d, "destroy", line.split()[1])
    proc.kill()
    proc.wait()
    while (pid := daemon_pid(d)) is not None:
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def _receiver(rd: Path) -> str:
    """The command `migrate -s ''` runs instead of ssh: migrate-receive on
    the second pyxend."""
    env = env_for(rd)
    return (f"env PYXEN_RUN_DIR={rd} PYTHONPATH={env['PYTHONPATH']} "
            f"{sys.executable} -m pyxen.cli migrate-receive")


def _start_counter(rd, cfgs, name="mig"):
    r = cli(rd, "create", cfgs(name, guest="suspend", extra="period_ms=20"))
    assert r.returncode == 0, r.stderr
    assert wait_until(lambda: len(_counts(_log(rd))) >= 10, timeout=20), _log(rd)


def test_migrate_through_a_command_counter_continues(rd, rd2, cfgs):
    """xl migrate -s '' DOM 'COMMAND': the domain leaves the first pyxend and
    runs in the second from the count it had; --debug makes the target
    check every frame against the source's checksums."""
    _start_counter(rd, cfgs)
    r = cli(rd, "migrate", "--debug", "-s", "", "mig", _receiver(rd2), timeout=120)
    assert r.returncode == 0, r.stderr
    assert "Migration successful" in r.stderr, r.stderr
    m = re.search(r"downtime (\d+) ms", r.stderr)
    assert m, r.stderr
    assert "mig" not in rows(rd)                    # the source is gone
    assert rows(rd2)["mig"]["state"] in ("r-----", "-b----")
    before = _counts(_log(rd))
    assert wait_until(lambda: len(_counts(_log(rd2))) >= 10, timeout=20), _log(rd2)
    after = _counts(_log(rd2))
    # the target counts on from where the source stopped: no restart, no gap
    assert after[0] == before[-1] + 1, (before[-3:], after[:3])
    assert after == list(range(after[0], after[0] + len(after)))
    assert "resumed in a new domain (rc 0)" in _log(rd2)


def test_migrate_to_relocation_server(rd, rd2, cfgs):
    """pyxen migrate DOM tcp://HOST:PORT: no ssh, the second pyxend's
    relocation server takes it (and the domain keeps its uuid)."""
    _start_counter(rd, cfgs)
    before_uuid = cli(rd, "list", "-l", "mig").stdout
    port = (rd2 / "relocation.port").read_text().strip()
    r = cli(rd, "migrate", "mig", f"tcp://127.0.0.1:{port}", timeout=120)
    assert r.returncode == 0, r.stderr
    assert "mig" not in rows(rd) and "mig" in rows(rd2)
    u = re.search(r'"uuid": "([0-9a-f-]+)"', before_uuid).group(1)
    assert u in cli(rd2, "list", "-l", "mig").stdout
    n = len(_counts(_log(rd2)))
    assert wait_until(lambda: len(_counts(_log(rd2))) > n + 5, timeout=20)


def test_relocation_allow_list_refuses_others(tmp_path, rd, cfgs, kvm):
    """A peer the allow-list does not name is refused; the source carries on."""
    d = tmp_path / "run3"
    d.mkdir()
    proc = start_daemon(d, args=("--relocation-port", "0",
                                 "--relocation-hosts-allow", r"^192\.0\.2\.99$"))
    try:
        assert wait_until(lambda: (d / "relocation.port").exists())
        _start_counter(rd, cfgs)
        port = (d / "relocation.port").read_text().strip()
        r = cli(rd, "migrate", "mig", f"tcp://127.0.0.1:{port}", timeout=120)
        assert r.returncode == 1
        assert "carries on here" in r.stderr, r.stderr
        assert rows(rd)["mig"]["state"] in ("r-----", "-b----")
        assert rows(d).keys() == {"Domain-0"}
        assert "refused a connection from 127.0.0.1" in cli(d, "dmesg").stdout + \
            (d / "pyxend.err").read_text()
        n = len(_counts(_log(rd)))
        assert wait_until(lambda: len(_counts(_log(rd))) > n + 5, timeout=20)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("receiver", ["head -c 100000 >/dev/null", "exit 3"])
def test_migration_killed_midway_leaves_source_running(rd, cfgs, receiver):
    """The target goes away during the pre-copy rounds: migrate fails, the
    source runs on in the same domain and the counter carries on."""
    _start_counter(rd, cfgs)
    domid = rows(rd)["mig"]["id"]
    r = cli(rd, "migrate", "-s", "", "mig", receiver, timeout=120)
    assert r.returncode == 1
    assert "the domain carries on here" in r.stderr, r.stderr
    assert rows(rd)["mig"]["id"] == domid
    n = len(_counts(_log(rd)))
    assert wait_until(lambda: len(_counts(_log(rd))) > n + 5, timeout=20)
    # and it can still go: a second attempt to a receiver that works is fine
    assert cli(rd, "list", "mig").returncode == 0


def test_receiver_refuses_a_foreign_stream(rd):
    """migrate-receive given something else than a migration stream says so
    and creates nothing."""
    r = cli(rd, "migrate-receive", input="GET / HTTP/1.0\r\n\r\n" + "x" * 100, timeout=60)
    assert r.returncode == 1
    assert "not a pyxen migration stream" in r.stderr, r.stderr
    assert rows(rd).keys() == {"Domain-0"}


def test_stream_header_checks():
    r, w = os.pipe()
    try:
        os.write(w, b"PYXENSAV" + bytes(24))
        os.close(w)
        w = -1
        with pytest.raises(migration.MigrationError, match="version 0"):
            migration.read_header(migration.Channel(r, timeout=5))
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_dirty_log_sees_guest_and_pyxen_writes(kvm, guest_elf):
    """Log-dirty: the frames the running guest writes (KVM's log) and those
    pyxen writes for it (MemoryManager.mark_dirty) are reported, then the
    log is clean of them."""
    from pyxen.hv.dirtylog import DirtyLog
    from pyxen.toolstack.builder import LocalServices, build_domain, close_domain
    from pyxen.toolstack.domconfig import DomainConfig
    from guest_helpers import Console
    out = Console()
    cfg = DomainConfig(name="dl", kernel=str(guest_elf("suspend")), cmdline="period_ms=20",
                       memory=32)
    dom = build_domain(cfg, LocalServices(out.extend, devices=False), console_io=out.extend,
                       kvm=kvm)
    t = threading.Thread(target=dom.run, daemon=True)
    t.start()
    try:
        assert wait_until(lambda: len(_counts(out.text)) >= 3, timeout=20)
        log = DirtyLog(dom)
        log.start()
        time.sleep(0.3)
        first = log.harvest()
        hot = log.hot_frames()
        guest_written = set(first) - hot
        assert guest_written, "the counting guest wrote nothing?"
        far = dom.nr_pages - 3               # mini-OS uses nothing this high
        assert far not in first
        dom.mm.mark_dirty(far)
        again = log.harvest()
        assert far in again
        log.harvest()           # a mark may land in the bitmap just swapped out: looked at twice
        assert far not in log.harvest()
        log.stop()
        assert dom.mm.dirty is None
    finally:
        dom.destroy()
        t.join(10)
        close_domain(dom)
