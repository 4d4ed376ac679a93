"""Make the src/ layout importable when pyxen is not installed."""

import os
import sys

try:
    import pyxen  # noqa: F401
except ImportError:  # pragma: no cover - depends on how tests are run
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))


import signal  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))   # daemon_helpers
from daemon_helpers import cli, daemon_pid, start_daemon, wait_until  # noqa: E402


class RunDir(type(Path())):
    """A run directory, and the pid of the pyxend first started on it."""
    pid: int


@pytest.fixture
def rd(tmp_path, kvm):
    """A pyxend on a fresh run directory; afterwards every domain is destroyed
    and every pyxend serving the directory (a test may start another) stopped."""
    d = RunDir(tmp_path / "run")
    d.mkdir()
    proc = start_daemon(d)
    d.pid = proc.pid
    yield d
    r = cli(d, "list")
    for line in r.stdout.splitlines()[2:]:
        cli(d, "destroy", line.split()[1])
    proc.kill()
    proc.wait()
    while (pid := daemon_pid(d)) is not None:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or
                   Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", timeout=10)


@pytest.fixture
def cfgs(tmp_path, guest_elf):
    """cfgs(name, guest="idle", **keys): an xl.cfg for a mini-OS guest."""
    def make(name, guest="idle", **extra):
        elf = guest_elf(guest)
        lines = [f'name = "{name}"', f'kernel = "{elf}"', "memory = 32"]
        lines += [f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v}" for k, v in extra.items()]
        p = tmp_path / f"{name}.cfg"
        p.write_text("\n".join(lines) + "\n")
        return str(p)
    return make
