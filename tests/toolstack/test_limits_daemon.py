"""Limits Xen has (issue 13), attacked through pyxend the way a local user
(a member of the pyxen group) or a guest behind pyxend would: the API's
parameters and passed descriptors, domain names that lead out of the run
directory, console clients that stop reading, consoles that flood, logs
under logrotate, many inter-domain event channels, max_event_channels."""
from __future__ import annotations

import array
import json
import os
import re
import signal
import socket
import time

from daemon_helpers import cli, rows, wait_until, xs


def request(rd, method, params=None, fds=()):
    """One raw API request on a fresh connection; the reply object."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(rd / "pyxend.sock"))
    try:
        data = (json.dumps({"id": 7, "method": method, "params": params or {}}) + "\n").encode()
        if fds:
            s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            s.sendall(data)
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        return json.loads(buf)
    finally:
        s.close()


def open_fds(pid) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def domain_log(rd, name) -> bytes:
    p = rd / "log" / f"guest-{name}.log"
    return p.read_bytes() if p.exists() else b""


def hv_log(rd, domid) -> bytes:
    p = rd / "log" / f"domain-{domid}.log"
    return p.read_bytes() if p.exists() else b""


# --- pyxend API ---------------------------------------------------------------------------------
def test_api_parameters_are_checked(rd, cfgs):
    assert cli(rd, "create", cfgs("target")).returncode == 0
    assert wait_until(lambda: "target" in rows(rd))
    bad = [
        ("rename", {"dom": "target", "name": {"evil": 1}}),
        ("rename", {"dom": "target", "name": ["x"]}),
        ("rename", {"dom": "target"}),
        ("rename", {"dom": "target", "name": "ok", "extra": 1}),
        ("mem_set", {"dom": "target", "kb": "65536"}),
        ("mem_set", {"dom": "target", "kb": True}),
        ("mem_set", {"dom": "target", "kb": 10 ** 30}),
        ("mem_set", {"dom": "target", "mb": 64}),
        ("mem_max", {"dom": "target", "kb": -1}),
        ("vcpu_set", {"dom": "target", "count": 1.5}),
        ("vcpu_pin", {"dom": "target", "vcpu": "0; rm", "cpus": [0]}),
        ("vcpu_pin", {"dom": "target", "vcpu": 0, "cpus": "0-1"}),
        ("vcpu_pin", {"dom": "target", "vcpu": 5, "cpus": [0]}),
        ("sched_credit", {"dom": "target", "weight": 0}),
        ("sched_credit", {"dom": "target", "cap": "a lot"}),
        ("log", {"lines": -10}),
        ("log", {"lines": "all"}),
        ("create", {"config": ["name='x'"]}),
        ("create", {"config": "name='x'", "overrides": "memory=64"}),
        ("create", {"config": "name='x'", "overrides": [1, 2]}),
        ("list", {"dom": {"$ne": 0}}),
        ("destroy", {"dom": ["target"]}),
        ("domname", {"domid": "1"}),
        ("evtchn_connect", {"from_dom": 1, "from_port": 0, "to_dom": 1, "to_port": 1}),
        ("block_attach", {"dom": "target", "spec": "x\0y"}),
        ("uptime", {"verbose": True}),
    ]
    for method, params in bad:
        reply = request(rd, method, params)
        assert reply.get("error", {}).get("code") == "EINVAL", (method, params, reply)
    for reply in (request(rd, "version", [1, 2]), request(rd, "../etc", {})):
        assert "error" in reply, reply
    # pyxend is fine and nothing changed
    t = rows(rd)
    assert "target" in t and t["target"]["mem"] == 32
    assert xs(rd, "xenstore-read", f"/local/domain/{t['target']['id']}/name").stdout.strip() == \
        "target"


def test_descriptors_passed_with_requests_are_closed(rd):
    """50 connections x 16 descriptors (SCM_RIGHTS) with requests that take
    none: pyxend holds none of them afterwards, nor while a connection
    stays open."""
    null = [os.open(os.devnull, os.O_RDONLY) for _ in range(16)]
    try:
        request(rd, "version")
        before = open_fds(rd.pid)
        for _ in range(50):
            assert request(rd, "version", fds=null)["result"]["api"] == 1
        assert wait_until(lambda: open_fds(rd.pid) <= before + 2, 10), \
            (before, open_fds(rd.pid))
        # one connection, many requests
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(str(rd / "pyxend.sock"))
        f = s.makefile("rb")
        for i in range(5):
            s.sendmsg([b'{"id": %d, "method": "version"}\n' % i],
                      [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", null))])
            assert json.loads(f.readline())["id"] == i
        assert open_fds(rd.pid) <= before + 3, (before, open_fds(rd.pid))
        s.close()
    finally:
        for fd in null:
            os.close(fd)


BAD_NAMES = ["../../escape", "../escape", "a/b", "..", ".", "", "12345", "Domain-0",
             "x" * 65, "tab\there", "esc\x1bname"]


def test_domain_names_follow_xl_rules(rd, cfgs, tmp_path):
    """A domain cannot be renamed to a name that is not a valid name= (here:
    with ../ components, which made coredump-destroy write guest memory
    outside the run directory); its core dump lands in run_dir/dump."""
    assert cli(rd, "create", cfgs("victim", on_crash="coredump-destroy")).returncode == 0
    assert wait_until(lambda: "victim" in rows(rd))
    domid = rows(rd)["victim"]["id"]
    for name in BAD_NAMES:
        reply = request(rd, "rename", {"dom": "victim", "name": name})
        assert reply.get("error", {}).get("code") in ("EINVAL", "EEXIST"), (name, reply)
        if name and "\0" not in name:
            r = cli(rd, "rename", "victim", name)
            assert r.returncode == 1, (name, r.stdout)
    assert cli(rd, "rename", "victim", "victim.renamed").returncode == 0
    assert xs(rd, "xenstore-read", f"/local/domain/{domid}/name").stdout.strip() == \
        "victim.renamed"
    assert wait_until(lambda: b"idle: ready" in domain_log(rd, "victim"), 30)
    assert xs(rd, "xenstore-write", f"/local/domain/{domid}/control/shutdown",
              "crash").returncode == 0
    dump = rd / "dump"
    assert wait_until(lambda: list(dump.glob("*.core")), 60)
    assert [p.name for p in dump.iterdir()] == [f"victim.renamed-{domid}.core"]
    assert not [p for p in tmp_path.rglob("*.core") if p.parent != dump]


def test_config_names_follow_the_same_rules(rd, cfgs):
    cfg = cfgs("placeholder")
    for name in ("../x", "..", "Domain-0", "007"):
        r = cli(rd, "create", cfg, f'name="{name}"')
        assert r.returncode != 0, (name, r.stdout)
    assert "placeholder" not in rows(rd) and len(rows(rd)) == 1


# --- consoles ----------------------------------------------------------------------------------
def attach_raw_console(rd, dom, rcvbuf=4096) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.connect(str(rd / "pyxend.sock"))
    s.sendall(b'{"id": 1, "method": "console", "params": {"dom": "%s"}}\n' % dom.encode())
    return s


def test_console_client_that_stops_reading_does_not_stall_pyxend(rd, cfgs):
    """A console client that never reads while its guest floods the console:
    pyxend keeps serving every other guest's xenstore ring and console (a
    new domain comes up and talks), the flooding guest's output all reaches
    its log, and the stuck client is disconnected."""
    # 1.2 MB of output: several times what the client's socket and its
    # CLIENT_BUFFER hold. How fast it drains is xenconsoled's rate limit and
    # the host's speed (20-300 KB/s), so the test waits for events, not rates.
    n = 20000
    assert cli(rd, "create", "-p", cfgs("flooder", guest="conflood",
                                        extra=f"mode=ring lines={n}")).returncode == 0
    stuck = attach_raw_console(rd, "flooder")
    try:
        assert cli(rd, "unpause", "flooder").returncode == 0
        # the client's buffers fill long before the guest is done
        assert wait_until(lambda: "console client disconnected"
                          in cli(rd, "log", "-n", "200").stdout, 120, interval=1)
        assert b"Test result:" not in domain_log(rd, "flooder")
        assert cli(rd, "create", cfgs("bystander")).returncode == 0
        assert wait_until(lambda: b"idle: ready" in domain_log(rd, "bystander"), 30), \
            "another guest's xenstore and console were not served"
        assert wait_until(lambda: b"Test result:" in domain_log(rd, "flooder"), 240)
        log = domain_log(rd, "flooder").decode(errors="replace")
        assert "Test result: SUCCESS" in log, log[-2000:]
        assert len(re.findall(r"^ring \d{6} y+$", log, re.M)) == n
    finally:
        stuck.close()


def test_sighup_reopens_console_logs(rd, cfgs):
    """logrotate moves guest-NAME.log away and sends SIGHUP: new output goes
    to a new guest-NAME.log (as xenconsoled does)."""
    assert cli(rd, "create", cfgs("rotated")).returncode == 0
    log = rd / "log" / "guest-rotated.log"
    assert wait_until(lambda: log.exists() and b"idle: ready" in log.read_bytes(), 30)
    old = log.with_name("guest-rotated.log.1")
    log.rename(old)
    os.kill(rd.pid, signal.SIGHUP)
    assert wait_until(log.exists, 10)
    c = attach_raw_console(rd, "rotated", rcvbuf=65536)
    try:
        c.sendall(b"after rotation\r")
        assert wait_until(lambda: log.exists() and b"echo: after rotation" in log.read_bytes(),
                          30)
    finally:
        c.close()
    assert b"echo: after rotation" not in old.read_bytes()
    assert b"idle: ready" in old.read_bytes()
    assert rows(rd)["rotated"]


# --- event channels ----------------------------------------------------------------------------
def threads(pid) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def domain_pid(rd, domid) -> int:
    return json.loads((rd / "domains" / f"{domid}.json").read_text())["pid"]


def test_inter_domain_channels_need_no_thread_each(rd, cfgs):
    """64 event channels between two domain processes: one poller in each
    process waits on all of them (before: one host thread per channel), and
    every channel works both ways."""
    n = 64
    assert cli(rd, "create", cfgs("peer-a", guest="evtpeer",
                                  extra=f"role=a peer=2 channels={n}")).returncode == 0
    a = rows(rd)["peer-a"]["id"]
    port = None

    def published():
        nonlocal port
        r = xs(rd, "xenstore-read", f"/local/domain/{a}/data/port")
        port = r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else None
        return port is not None
    assert wait_until(published, 30)
    a_threads = threads(domain_pid(rd, a))
    assert cli(rd, "create", cfgs("peer-b", guest="evtpeer",
                                  extra=f"role=b peer={a} port={port} channels={n}")
               ).returncode == 0
    b = rows(rd)["peer-b"]["id"]

    def bound():
        r = xs(rd, "xenstore-read", f"/local/domain/{b}/data/bound")
        return r.returncode == 0 and r.stdout.strip() == str(n)
    b_base = threads(domain_pid(rd, b))
    assert wait_until(bound, 60), hv_log(rd, b)[-2000:]
    assert threads(domain_pid(rd, a)) <= a_threads + 2
    assert threads(domain_pid(rd, b)) <= b_base + 2
    assert xs(rd, "xenstore-write", f"/local/domain/{b}/data/release", "1").returncode == 0
    for domid in (a, b):
        assert wait_until(lambda: b"Test result:" in hv_log(rd, domid), 60), hv_log(rd, domid)
        assert b"Test result: SUCCESS" in hv_log(rd, domid), hv_log(rd, domid).decode()


def test_max_event_channels_from_xl_cfg(rd, cfgs):
    """max_event_channels= in xl.cfg is the domain's port limit under pyxend."""
    assert cli(rd, "create", cfgs("limited", guest="badinput", max_event_channels=100,
                                  extra="max_port=100")).returncode == 0

    def result():
        logs = list((rd / "log").glob("domain-*.log"))
        return len(logs) == 1 and b"Test result:" in logs[0].read_bytes() and logs[0]
    assert wait_until(result, 60), [p.read_bytes()[-2000:] for p in (rd / "log").glob("*")]
    text = result().read_bytes().decode(errors="replace")
    assert "Test result: SUCCESS" in text, text
    assert "highest port 100 (want 100)" in text
