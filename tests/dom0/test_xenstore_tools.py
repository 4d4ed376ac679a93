"""End to end: the pyxen-xenstored daemon driven by Debian's real
xenstore-utils binaries (libxenstore finds the socket via XENSTORED_PATH)."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

from xs_helpers import VENV_BIN, wait_for_socket

TIMEOUT = 20


def run(tools, daemon, name, *args, check=True):
    p = subprocess.run([tools[name], *args], env=daemon.env(), capture_output=True,
                       text=True, timeout=TIMEOUT)
    if check and p.returncode != 0:
        raise AssertionError(f"xenstore-{name} {args} -> {p.returncode}: {p.stderr}")
    return p


def out(tools, daemon, name, *args):
    return run(tools, daemon, name, *args).stdout


def test_write_read_list_exists_rm(xenstored, xs_tools):
    d = xenstored()
    run(xs_tools, d, "write", "/vm/uuid-1/name", "guest one", "/vm/uuid-1/memory", "512")
    assert out(xs_tools, d, "read", "/vm/uuid-1/name") == "guest one\n"
    assert out(xs_tools, d, "read", "/vm/uuid-1/name", "/vm/uuid-1/memory") == "guest one\n512\n"
    p = run(xs_tools, d, "read", "-p", "/vm/uuid-1/memory")
    assert p.stdout == "/vm/uuid-1/memory: 512\n"
    assert out(xs_tools, d, "list", "/vm/uuid-1") == "name\nmemory\n"
    assert out(xs_tools, d, "list", "-p", "/vm/uuid-1") == "/vm/uuid-1/name\n/vm/uuid-1/memory\n"
    assert run(xs_tools, d, "exists", "/vm/uuid-1/name").returncode == 0
    assert run(xs_tools, d, "exists", "/vm/nope", check=False).returncode == 1
    p = run(xs_tools, d, "read", "/vm/nope", check=False)
    assert p.returncode == 1 and "couldn't read path /vm/nope" in p.stderr
    run(xs_tools, d, "rm", "/vm/uuid-1/memory")
    assert out(xs_tools, d, "list", "/vm/uuid-1") == "name\n"
    run(xs_tools, d, "rm", "/vm/uuid-1/memory")          # already gone: fine
    p = run(xs_tools, d, "rm", "/vm/nope/deeper", check=False)
    assert p.returncode == 1 and "could not remove path" in p.stderr
    run(xs_tools, d, "write", "/vm/keep", "k")
    run(xs_tools, d, "rm", "-t", "/vm/uuid-1/name")      # tidy: empty parents go too
    assert out(xs_tools, d, "list", "/vm") == "keep\n"
    run(xs_tools, d, "rm", "-t", "/vm/keep")             # ... up to the root
    assert out(xs_tools, d, "list", "/") == "local\ntool\n"


def test_ls_formats(xenstored, xs_tools):
    d = xenstored()
    run(xs_tools, d, "write", "/t/a", "1", "/t/b/c", "two words")
    assert out(xs_tools, d, "ls", "/t") == 'a = "1"\nb = ""\n c = "two words"\n'
    assert out(xs_tools, d, "ls", "-f", "/t") == (
        '/t/a = "1"\n/t/b = ""\n/t/b/c = "two words"\n')
    root = out(xs_tools, d, "ls")
    assert root.startswith('local = ""\n domain = ""\n')
    assert 'tool = ""\n xenstored = ""\n' in root
    perms = out(xs_tools, d, "ls", "-p", "/t").splitlines()
    assert perms[0].startswith('a = "1"') and perms[0].endswith("  (n0)")
    p = run(xs_tools, d, "ls", "/missing", check=False)
    assert p.returncode != 0


def test_binary_values_are_escaped(xenstored, xs_tools):
    d = xenstored()
    run(xs_tools, d, "write", "/bin", r"\x01tab\there\\")
    assert out(xs_tools, d, "read", "/bin") == "\\001tab\\there\\\\\n"


def test_chmod(xenstored, xs_tools):
    d = xenstored()
    run(xs_tools, d, "write", "/p/a/b", "x")
    run(xs_tools, d, "chmod", "/p/a", "n0", "r5", "b7")
    assert out(xs_tools, d, "ls", "-fp", "/p").splitlines()[0].endswith("(n0,r5,b7)")
    run(xs_tools, d, "chmod", "-r", "/p", "b3")
    lines = out(xs_tools, d, "ls", "-fp", "/p").splitlines()
    assert all(line.endswith("(b3)") for line in lines) and len(lines) == 2
    run(xs_tools, d, "chmod", "-u", "/p/a/b", "r0")
    assert out(xs_tools, d, "ls", "-fp", "/").count("(r0)") >= 3
    p = run(xs_tools, d, "chmod", "/nope", "r0", check=False)
    assert p.returncode != 0


def _read_lines(proc, n, timeout=TIMEOUT):
    lines = []
    buf = b""
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while len(lines) < n and time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                lines.append(line.decode())
    return lines


def test_watch(xenstored, xs_tools):
    d = xenstored()
    run(xs_tools, d, "write", "/watched/start", "")
    proc = subprocess.Popen([xs_tools["watch"], "-n", "4", "/watched"], env=d.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _read_lines(proc, 1) == ["/watched"]          # fires at registration
        run(xs_tools, d, "write", "/watched/a", "1")
        run(xs_tools, d, "write", "/elsewhere", "1")
        run(xs_tools, d, "write", "/watched/b/c", "2")
        run(xs_tools, d, "rm", "/watched")
        assert _read_lines(proc, 3) == ["/watched/a", "/watched/b/c", "/watched"]
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_watch_special_introduce(xenstored, xs_tools):
    d = xenstored()
    proc = subprocess.Popen([xs_tools["watch"], "-n", "2", "@introduceDomain"], env=d.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert _read_lines(proc, 1) == ["@introduceDomain"]
        # INTRODUCE through a Python socket client (there is no tool for it)
        from xs_helpers import XsSocket
        c = XsSocket(str(d.sock))
        assert c.request(8, b"12\x004096\x005\x00") == (8, b"OK\0")
        c.close()
        assert _read_lines(proc, 1) == ["@introduceDomain"]
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        proc.stdout.close()
        proc.stderr.close()


def test_restart_keeps_nodes_and_permissions(xenstored, xs_tools):
    d = xenstored()
    run(xs_tools, d, "write", "/local/domain/3/name", "three", "/local/domain/3/data/x",
        "\\x00\\x01", "/vm/abc/uuid", "abc")
    run(xs_tools, d, "chmod", "/local/domain/3", "n0", "r3")
    run(xs_tools, d, "chmod", "-r", "/local/domain/3/data", "b3")
    run(xs_tools, d, "rm", "/tool/xenstored")
    before = out(xs_tools, d, "ls", "-fp")
    d.stop(signal.SIGKILL)                       # no chance to flush anything
    d2 = xenstored()
    after = out(xs_tools, d2, "ls", "-fp")
    assert after == before
    assert "/local/domain/3 = \"\"" in after and "(n0,r3)" in after
    assert "/tool/xenstored" not in after
    assert out(xs_tools, d2, "read", "/local/domain/3/data/x") == "\\000\\001\n"


def test_graceful_stop_and_restart(xenstored, xs_tools):
    d = xenstored()
    run(xs_tools, d, "write", "/g", "1")
    assert d.stop(signal.SIGTERM) == 0
    assert not d.sock.exists()
    d2 = xenstored()
    assert out(xs_tools, d2, "read", "/g") == "1\n"


def test_without_state_file_starts_fresh(xenstored, xs_tools):
    d = xenstored(state=False)
    run(xs_tools, d, "write", "/x", "1")
    d.stop(signal.SIGTERM)
    d2 = xenstored(state=False)
    assert run(xs_tools, d2, "read", "/x", check=False).returncode == 1


def test_daemon_mode_with_pid_file(tmp_path, xs_tools):
    exe = VENV_BIN / "pyxen-xenstored"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pyxen.dom0.xenstore.server"]
    sock, pidfile = tmp_path / "d.sock", tmp_path / "d.pid"
    p = subprocess.run(cmd + ["--socket", str(sock), "--state", str(tmp_path / "d.json"),
                              "--pid-file", str(pidfile)],
                       timeout=TIMEOUT, capture_output=True)
    pid = None
    try:
        assert p.returncode == 0, p.stderr
        wait_for_socket(sock)
        pid = int(pidfile.read_text())
        env = dict(os.environ, XENSTORED_PATH=str(sock))
        subprocess.run([xs_tools["write"], "/daemon", "yes"], env=env, check=True,
                       timeout=TIMEOUT)
        r = subprocess.run([xs_tools["read"], "/daemon"], env=env, capture_output=True,
                           text=True, timeout=TIMEOUT)
        assert r.stdout == "yes\n"
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and pidfile.exists():
            time.sleep(0.05)
        assert not pidfile.exists() and not sock.exists()
        pid = None
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_bad_state_file_refuses_to_start(tmp_path):
    exe = VENV_BIN / "pyxen-xenstored"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pyxen.dom0.xenstore.server"]
    state = tmp_path / "broken.json"
    state.write_text("{not json")
    p = subprocess.run(cmd + ["--socket", str(tmp_path / "s"), "--state", str(state), "-F"],
                       timeout=TIMEOUT, capture_output=True, text=True)
    assert p.returncode == 1 and "cannot load state" in p.stderr
    assert state.read_text() == "{not json"


def test_many_tool_invocations_in_parallel(xenstored, xs_tools):
    d = xenstored()
    procs = [subprocess.Popen([xs_tools["write"], f"/par/{i}", str(i)], env=d.env())
             for i in range(16)]
    for p in procs:
        assert p.wait(TIMEOUT) == 0
    listing = out(xs_tools, d, "list", "/par").split()
    assert sorted(listing, key=int) == [str(i) for i in range(16)]


def test_large_directory_falls_back_to_directory_part(xenstored, xs_tools):
    d = xenstored()
    names = [f"entry-{i:03d}-" + "x" * 50 for i in range(150)]    # > 4096 bytes
    args = []
    for n in names:
        args += [f"/big/{n}", "v"]
    run(xs_tools, d, "write", *args)
    assert out(xs_tools, d, "list", "/big").split() == names
