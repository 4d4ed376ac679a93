"""Running pyxend and the pyxen CLI from tests, the way an administrator does."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def env_for(rd: Path) -> dict:
    return dict(os.environ, PYXEN_RUN_DIR=str(rd), PYTHONPATH=str(ROOT / "src"))


def cli(rd, *args, timeout=60, input=None):
    return subprocess.run([sys.executable, "-m", "pyxen.cli", *args], env=env_for(rd),
                          capture_output=True, text=True, timeout=timeout, input=input)


def start_daemon(rd: Path, prefix=(), args=()) -> subprocess.Popen:
    """pyxend -F on run directory rd; prefix: a command it runs under (e.g.
    ip netns exec NAME: pyxend in a network namespace); args: more options."""
    p = subprocess.Popen([*prefix, sys.executable, "-m", "pyxen.toolstack.daemon", "-F", *args],
                         env=env_for(rd),
                         stdout=subprocess.DEVNULL, stderr=open(rd / "pyxend.err", "ab"),
                         start_new_session=True)
    for _ in range(300):
        if (rd / "pyxend.sock").exists() and cli(rd, "list", timeout=10).returncode == 0:
            return p
        time.sleep(0.05)
    raise RuntimeError("pyxend did not start")


def rows(rd):
    r = cli(rd, "list")
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines()[1:]:
        parts = line.split()
        out[parts[0]] = {"id": int(parts[1]), "mem": int(parts[2]), "vcpus": int(parts[3]),
                         "state": parts[4]}
    return out


def wait_until(pred, timeout=10.0, interval=0.1):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def xs(rd, *args):
    return subprocess.run(args, env=dict(os.environ, XENSTORED_PATH=str(rd / "xenstored.sock")),
                          capture_output=True, text=True, timeout=30)


def daemon_pid(rd):
    """The pid of a pyxend serving run directory rd, or None."""
    out = subprocess.run(["pgrep", "-f", "pyxen.toolstack.daemon -F"], capture_output=True,
                         text=True).stdout.split()
    for pid in out:
        try:
            if f"PYXEN_RUN_DIR={rd}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                return int(pid)
        except OSError:
            pass
    return None
