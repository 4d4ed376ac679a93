"""The `pyxen` command as an administrator uses it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def pyxen(*args, cwd=ROOT, env=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "pyxen.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def write_cfg(tmp_path, text):
    p = tmp_path / "d.cfg"
    p.write_text(text)
    return p


def test_create_console_shows_guest_output_and_exits_by_reason(kvm, guest_elf):
    guest_elf("hello")
    r = pyxen("create", "-c", "examples/minios.cfg")
    assert r.returncode == 0, r.stderr
    assert "Hello from pyxen mini-OS" in r.stdout
    assert "Test result: SUCCESS" in r.stdout
    assert "shut down: poweroff" in r.stderr


def test_create_exit_status_for_crash(kvm, guest_elf, tmp_path):
    elf = guest_elf("shutdown")
    cfg = write_cfg(tmp_path, f'name="s"\nkernel="{elf}"\nextra="reason=crash"\n')
    r = pyxen("create", "-c", str(cfg))
    assert r.returncode == 1, r.stderr
    assert "crashed" in r.stderr


def test_trace_file(kvm, guest_elf, tmp_path):
    guest_elf("hello")
    trace = tmp_path / "t.log"
    r = pyxen("create", "-q", "--trace", str(trace), "examples/minios.cfg")
    assert r.returncode == 0, r.stderr
    text = trace.read_text()
    assert "hypercall console_io" in text and "shutdown poweroff" in text


def test_config_syntax_error_names_file_and_line(tmp_path):
    cfg = write_cfg(tmp_path, 'name = "x"\nmemory = 32\nkernel = "unterminated\n')
    r = pyxen("create", str(cfg))
    assert r.returncode == 64
    assert f"{cfg}:3:" in r.stderr


def test_kernel_that_is_not_elf(tmp_path, kvm):
    k = tmp_path / "kernel"
    k.write_bytes(b"not a kernel at all" * 10)
    cfg = write_cfg(tmp_path, f'name="x"\nkernel="{k}"\n')
    r = pyxen("create", str(cfg))
    assert r.returncode == 65
    assert "kernel" in r.stderr and "not" in r.stderr


def test_memory_larger_than_host(tmp_path, kvm, guest_elf):
    elf = guest_elf("hello")
    cfg = write_cfg(tmp_path, f'name="x"\nkernel="{elf}"\nmemory=900000\n')
    r = pyxen("create", str(cfg))
    assert r.returncode == 65
    assert "more than this host can give" in r.stderr


def test_help_for_every_command():
    r = pyxen("--help")
    assert r.returncode == 0 and "create" in r.stdout
    r = pyxen("create", "--help")
    assert r.returncode == 0 and "exit status" in r.stdout


def test_command_reference_is_generated_from_help():
    """docs/commands.md comes from the same source as --help and is current."""
    from pyxen import docgen
    assert docgen.main(["--check"]) == 0


def test_example_configs_are_valid(linux_images, guest_elf):
    """Every examples/*.cfg loads, including its disk and vif entries (the
    kernels they name are the ones `./dev setup` / the suite prepares)."""
    guest_elf("hello")
    from pyxen.toolstack.domconfig import DomainConfig
    from pyxen.toolstack.xlcfg import parse
    root = Path(__file__).resolve().parents[1]
    for cfg in sorted((root / "examples").glob("*.cfg")):
        c = DomainConfig.from_config(parse(cfg.read_text(), str(cfg)), base_dir=str(cfg.parent))
        c.disk_specs()
        c.vif_specs()
