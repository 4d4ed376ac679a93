"""The `pyxen` command as an administrator uses it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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


# --- xl's parsers and formats (issue 18) ---------------------------------------------------------
def test_memory_sizes_follow_xl_parse_mem_size_kb():
    from pyxen.cli import parse_mem_size_kb as kb
    assert [kb(t) for t in ("512k", "512K", "16m", "64", "1g", "1T", "2048b", "1023b")] == \
        [512, 512, 16384, 65536, 1 << 20, 1 << 30, 2, 0]
    assert kb(" 8M") == 8192 and kb("") == 0 and kb("k") == 0     # strtoll as xl calls it
    for bad in ("x", "12kb", "1.5g", "-1k", "m5", "16 m", "1e3"):
        assert kb(bad) == -1, bad


def test_cpumaps_follow_xl_parse_cpurange(monkeypatch):
    import pyxen.toolstack.cpumap as c
    monkeypatch.setattr(c, "host_node_cpus", lambda n, nr: {0: {0, 1}, 1: {2, 3}}.get(n, set()))
    p = lambda t: sorted(c.parse_cpurange(t, 4))      # noqa: E731
    assert p("all") == [0, 1, 2, 3] and p("2") == [2] and p("1-3") == [1, 2, 3]
    assert p("0,2-3") == [0, 2, 3] and p("all,^1") == [0, 2, 3] and p("0-3,^1-2") == [0, 3]
    assert p("node:1") == [2, 3] and p("nodes:0-1,^0") == [1, 2, 3] and p("all,^node:0") == [2, 3]
    assert p("nodes:all") == [0, 1, 2, 3] and p(",,1,") == [1] and p("9") == [] and p("node:7") == []
    for bad, msg in (("1-0", "Invalid pcpu range: 1-0."), ("x", "Invalid pcpu range: x."),
                     ("0-", "Invalid pcpu range: 0-."), ("^node:a", "Invalid pcpu range: a."),
                     ("^all", 'Can\'t combine "^" and "all".'), ("-1", "Invalid pcpu range: -1.")):
        with pytest.raises(c.CpumapError) as e:
            c.parse_cpurange(bad, 4)
        assert str(e.value) == msg


def test_vcpu_list_rows_are_xl_print_vcpuinfo():
    from pyxen.cli import format_cpumap, vcpu_line
    assert [format_cpumap(s, 4) for s in ({0, 1, 2, 3}, {0, 1}, {1, 2, 3}, {0, 2, 3}, set())] == \
        ["all", "0-1", "1-3", "0,2-3", "none"]
    row = {"name": "d", "domid": 3, "id": 1, "online": True, "state": "blocked", "cpu": 2,
           "cpu_time": 1.25, "affinity": [0, 1]}
    assert vcpu_line(row, 4) == "d" + " " * 31 + "     3     1    2   -b-       1.2  0-1 / all"
    assert vcpu_line(dict(row, state="running", affinity=[0, 1, 2, 3]), 4).endswith(
        "    2   r--       1.2  all / all")
    assert vcpu_line(dict(row, online=False, state="offline"), 4).endswith(
        "    -   --p       1.2  0-1 / all")


def test_uptime_format_is_xls():
    """xl_info.c uptime_to_string: hours padded to two places; -s drops the seconds."""
    from pyxen.cli import fmt_uptime
    assert fmt_uptime(5) == " 0:00:05"
    assert fmt_uptime(5, short=True) == " 0:00"
    assert fmt_uptime(11 * 3600 + 62) == "11:01:02"
    assert fmt_uptime(86400 + 3 * 3600 + 4 * 60 + 5) == "1 day,  3:04:05"
    assert fmt_uptime(3 * 86400 + 60, short=True) == "3 days,  0:01"

