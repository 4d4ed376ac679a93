"""xl parity (issue 18): commands and output formats as xl(1) has them,
checked the way a user sees them — the `xl` executable, real pyxend, real
mini-OS guests."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from daemon_helpers import ROOT, cli, daemon_pid, rows, start_daemon, wait_until, xs
from netns_helpers import netns  # noqa: F401  (fixture)

XL_JSON_EMPTY = re.compile(r'"arch_arm": \{\n\n {8}\}')


def pyxen(*args):
    return subprocess.run([sys.executable, "-m", "pyxen.cli", *args], capture_output=True,
                          text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))


def test_xl_executable_is_pyxen_under_xls_name():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'xl = "pyxen.cli:main"' in text
    xl = Path(sys.executable).parent / "xl"
    assert xl.exists(), "pip install -e . installs the xl script"
    r = subprocess.run([str(xl), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("usage: xl ")
    r = subprocess.run([str(xl), "shutdown"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr == "You must specify -a or a domain id.\n\n"


def test_create_dry_run_prints_libxl_json(tmp_path):
    cfg = tmp_path / "web.cfg"
    cfg.write_text('name = "web"\nkernel = "/boot/absent-vmlinuz"\nramdisk = "/boot/absent.img"\n'
                   'extra = "console=hvc0"\nmemory = 64\nmaxmem = 128\nvcpus = 2\nmaxvcpus = 4\n'
                   'uuid = "12345678-9abc-def0-1234-56789abcdef0"\n'
                   'disk = ["/srv/web.img,raw,xvda,rw", "/srv/cd.iso,raw,xvdc:cdrom,r"]\n'
                   'vif = ["mac=00:16:3e:00:00:01,bridge=br0"]\n'
                   'on_reboot = "rename-restart"\non_crash = "preserve"\n')
    r = pyxen("create", "-n", str(cfg), "memory=96")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(f"Parsing config from {cfg}\n")
    assert r.stdout.startswith('{\n    "c_info": {\n        "type": "pv",\n        "name": "web",\n'
                               '        "uuid": "12345678-9abc-def0-1234-56789abcdef0",\n'
                               '        "run_hotplug_scripts": "True"\n    },\n'
                               '    "b_info": {\n        "max_vcpus": 4,\n'
                               '        "avail_vcpus": [\n            0,\n            1\n'
                               '        ],\n')
    assert r.stdout.endswith("}\n") and XL_JSON_EMPTY.search(r.stdout)
    assert '"sched_params": {\n\n        }' in r.stdout      # an empty struct, as yajl writes it
    c = json.loads(r.stdout)
    b = c["b_info"]
    assert (b["max_memkb"], b["target_memkb"]) == (128 * 1024, 96 * 1024)    # override applied
    assert (b["kernel"], b["ramdisk"], b["cmdline"]) == \
        ("/boot/absent-vmlinuz", "/boot/absent.img", "console=hvc0")
    assert b["type.pv"] == {} and "event_channels" not in b        # defaults are left out
    assert c["disks"] == [
        {"pdev_path": "/srv/web.img", "vdev": "xvda", "format": "raw", "readwrite": 1},
        {"pdev_path": "/srv/cd.iso", "vdev": "xvdc", "format": "raw", "removable": 1,
         "is_cdrom": 1}]
    assert c["nics"] == [{"devid": 0, "mac": "00:16:3e:00:00:01", "bridge": "br0"}]
    # destroy is libxl's default action and so not written; the others by libxl's names
    assert [k for k in c if k.startswith("on_")] == ["on_reboot", "on_crash", "on_soft_reset"]
    assert (c["on_reboot"], c["on_crash"], c["on_soft_reset"]) == \
        ("restart_rename", "preserve", "soft_reset")
    r = pyxen("create", "-q", "--dryrun", str(cfg))
    assert r.returncode == 0 and r.stderr == "" and json.loads(r.stdout)["c_info"]["name"] == "web"
    bad = tmp_path / "bad.cfg"
    bad.write_text('name = "x"\nmemory = "lots"\nkernel = "/k"\n')
    r = pyxen("create", "-n", str(bad))
    assert r.returncode == 64 and f"{bad}:2:" in r.stderr and r.stdout == ""


def test_create_debug_list_long_and_verbose(rd, cfgs, tmp_path):
    cfg = cfgs("jq1", on_reboot="preserve", uuid="0badc0de-0000-4000-8000-000000000001")
    r = cli(rd, "create", "-d", cfg)
    assert r.returncode == 0, r.stderr
    debug = r.stderr.split("\n", 1)[1]                 # after "Parsing config from"
    assert json.loads(debug)["c_info"]["name"] == "jq1" and r.stdout == ""
    assert cli(rd, "create", cfgs("jq2", guest="shutdown", extra="reason=crash",
                                  on_crash="preserve")).returncode == 0
    assert wait_until(lambda: rows(rd).get("jq2", {}).get("state", "").startswith("---sc"))
    assert wait_until(lambda: rows(rd).get("jq1", {}).get("state") == "-b----")
    assert cli(rd, "mem-set", "jq1", "24m").returncode == 0
    assert cli(rd, "sched-credit", "-d", "jq1", "-w", "512").returncode == 0

    r = cli(rd, "list", "-l")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('[\n    {\n        "domid": ') and r.stdout.endswith("\n]\n\n")
    doms = json.loads(r.stdout)
    # what jq scripts written for xl ask: .[].config.c_info.name, .b_info.max_memkb ...
    by = {d["config"]["c_info"]["name"]: d for d in doms}
    assert sorted(by) == ["jq1", "jq2"], "Domain-0 has no stored config: not listed (xl)"
    j1 = by["jq1"]
    assert j1["domid"] == rows(rd)["jq1"]["id"]
    c = j1["config"]
    assert c["c_info"]["type"] == "pv" and c["c_info"]["uuid"] == "0badc0de-0000-4000-8000-000000000001"
    b = c["b_info"]
    assert (b["max_vcpus"], b["avail_vcpus"]) == (1, [0])
    assert (b["max_memkb"], b["target_memkb"]) == (32768, 24576)
    assert b["sched_params"] == {"sched": "credit", "weight": 512, "cap": 0}
    assert "idle" in b["kernel"]
    assert b["type.pv"] == {"slack_memkb": 0, "e820_host": "False"}
    assert c["on_reboot"] == "preserve" and "on_poweroff" not in c
    assert by["jq2"]["config"]["on_crash"] == "preserve"
    # devices as they are now, hot-plugged ones too (libxl_retrieve_domain_configuration)
    assert "disks" not in c
    img = tmp_path / "hot.img"
    img.write_bytes(bytes(1 << 20))
    assert cli(rd, "block-attach", "jq1", f"vdev=xvdb, target={img}").returncode == 0
    c = json.loads(cli(rd, "list", "-l", "jq1").stdout)[0]["config"]
    assert c["disks"] == [{"pdev_path": str(img), "vdev": "xvdb", "backend": "phy",
                           "format": "raw", "readwrite": 1, "discard_enable": "True",
                           "specification": "xen", "trusted": "True"}]
    one = json.loads(cli(rd, "list", "-l", "jq2").stdout)
    assert [d["config"]["c_info"]["name"] for d in one] == ["jq2"]

    # list -v: UUID, the reason code in hex ("-" while running), the security label
    lines = cli(rd, "list", "-v").stdout.splitlines()
    assert lines[0] == ("Name                                        ID   Mem VCPUs\tState\tTime(s)"
                        "   UUID                            Reason-Code\tSecurity Label")
    row1 = next(line for line in lines if line.startswith("jq1 "))
    assert row1.endswith(" 0badc0de-0000-4000-8000-000000000001 %8s %16s" % ("-", "-")), row1
    row2 = next(line for line in lines if line.startswith("jq2 "))
    assert re.search(r" [0-9a-f-]{36} %8x %16s$" % (3, "-"), row2), row2


def test_shutdown_reboot_messages_and_wait(rd, cfgs):
    assert cli(rd, "create", cfgs("goner")).returncode == 0
    assert wait_until(lambda: rows(rd).get("goner", {}).get("state") == "-b----")
    domid = rows(rd)["goner"]["id"]
    r = cli(rd, "shutdown", "-F", "-w", "goner")
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == [f"Shutting down domain {domid}", "Waiting for 1 domains",
                                     f"Domain {domid} has been destroyed"]
    assert "goner" not in rows(rd)
    r = cli(rd, "reboot", "-F", "goner")
    assert r.returncode == 1 and "goner is an invalid domain identifier" in r.stderr
    h = cli(rd, "shutdown", "--help").stdout
    assert "-F" in h and "ACPI power button" in h and "changes nothing" in " ".join(h.split())


def test_dmesg_clear_info_numa_console_types(rd, cfgs):
    assert cli(rd, "create", cfgs("quiet")).returncode == 0
    assert wait_until(lambda: "quiet" in rows(rd))
    first = cli(rd, "dmesg", "-c").stdout
    assert "created domain" in first
    assert "created domain" not in cli(rd, "dmesg").stdout, "dmesg -c emptied the log"

    out = cli(rd, "info", "-n").stdout.splitlines()
    i = out.index("cpu_topology           :")
    assert out[i + 1] == "cpu:    core    socket     node"
    online = os.sched_getaffinity(0) | set(range(os.cpu_count()))
    topo = out[i + 2:i + 2 + len(online)]
    assert [int(line.split(":")[0]) for line in topo] == sorted(online)
    assert all(re.fullmatch(r"[ \d]{3}:    [ \d]{4}     [ \d]{4}     [ \d-]{4}", line)
               for line in topo), topo
    assert "device topology        :" in out and "numa_info              :" in out
    n = out.index("node:    memsize    memfree    distances")
    m = re.fullmatch(r"   0:    ([ \d]{6})     ([ \d]{6})      (\d+(,\d+)*)", out[n + 1])
    assert m, out[n + 1]
    node0 = Path("/sys/devices/system/node/node0/meminfo")
    if node0.exists():
        total_kb = int(next(line for line in node0.read_text().splitlines()
                            if "MemTotal" in line).split()[3])
        assert int(m.group(1)) == total_kb // 1024
    assert out.index("numa_info              :") < out.index(
        next(line for line in out if line.startswith("xen_major")))
    assert cli(rd, "info", "xen_caps").stdout == "xen-3.0-x86_64\n"

    r = cli(rd, "console", "-t", "bogus", "quiet")
    assert r.returncode == 1 and r.stderr == "console type supported are: pv, serial, vuart\n"
    # as xl, -n counts only with -t (without it, the primary console)
    for extra in (("-t", "serial"), ("-t", "pv", "-n", "1")):
        r = cli(rd, "console", *extra, "quiet")
        assert r.returncode == 1 and r.stderr.endswith("Unable to attach console\n"), r.stderr
    r = cli(rd, "console", "-t", "serial", "nosuch")
    assert r.returncode == 1 and "nosuch is an invalid domain identifier" in r.stderr


def test_console_escape_character():
    from pyxen.cli import escape_byte
    assert [escape_byte(t) for t in (None, "^]", "^a", "^X", "q")] == [0x1d, 0x1d, 1, 0x18, 0x71]


def test_sysrq_and_dump_core(rd, cfgs, tmp_path):
    assert cli(rd, "create", cfgs("dumpee")).returncode == 0
    assert wait_until(lambda: rows(rd).get("dumpee", {}).get("state") == "-b----")
    domid = rows(rd)["dumpee"]["id"]
    assert cli(rd, "sysrq", "dumpee", "h").returncode == 0
    assert xs(rd, "xenstore-read", f"/local/domain/{domid}/control/sysrq").stdout.strip() == "h"
    r = cli(rd, "sysrq", "dumpee", "hs")
    assert r.returncode == 1 and r.stderr == "Invalid sysrq.\n\n"

    core = tmp_path / "dumpee.core"
    r = cli(rd, "dump-core", "dumpee", str(core))
    assert r.returncode == 0, r.stderr
    assert core.stat().st_uid == os.getuid()
    data = core.read_bytes()
    assert data[:4] == b"\x7fELF" and data[16] == 4          # ET_CORE
    assert len(data) >= 32 << 20                             # all of its 32 MiB
    sections = subprocess.run(["readelf", "-S", str(core)], capture_output=True,
                              text=True).stdout
    assert ".note.Xen" in sections and ".xen_p2m" in sections and ".xen_pages" in sections
    assert rows(rd)["dumpee"]["state"] == "-b----", "the domain runs on, not paused"
    r = cli(rd, "dump-core", "nosuch", str(tmp_path / "x.core"))
    assert r.returncode == 1 and "invalid domain identifier" in r.stderr
    assert not (tmp_path / "x.core").exists()
    r = cli(rd, "dump-core", "dumpee", str(tmp_path / "no" / "dir" / "x.core"))
    assert r.returncode == 1 and r.stderr.endswith("core dump failed (rc=-3)\n")


XENTOP_HEADER = ("      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS "
                 "NETS NETTX(k) NETRX(k) VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID")
# one row of xentop -b: each field in its printf format (xentop.c print_*)
XENTOP_ROW = re.compile(
    r"(?P<name>[ \S]{10}) (?P<state>[d-][s-][b-][c-][p-][r-]) (?P<cpu>[ \d]{9}\d) "
    r"(?P<cpu_pct>[ \d]{3}\d\.\d) (?P<mem>[ \d]{9}\d) (?P<mem_pct>[ \d]{3}\d\.\d) "
    r"(?P<maxmem>[ \d]{9}\d|  no limit) (?P<max_pct>[ \d]{6}\d\.\d|      n/a) "
    r"(?P<vcpus>[ \d]{4}\d) (?P<nets>[ \d]{3}\d) (?P<nettx>[ \d]{7}\d) (?P<netrx>[ \d]{7}\d) "
    r"(?P<vbds>[ \d]{3}\d) (?P<oo>[ \d]{7}[\d-]) (?P<rd>[ \d]{7}[\d-]) (?P<wr>[ \d]{7}[\d-]) "
    r"(?P<rsect>[ \d]{9}[\d-]) (?P<wsect>[ \d]{9}[\d-]) (?P<ssid>[ \d]{3}\d)\Z")


def test_top_batch_is_xentops(netns, rd, cfgs, tmp_path):
    """pyxen top -b prints xentop -b's table: no summary, per iteration the
    header and a row per domain (sorted by name) in xentop's formats, with
    the domain's real memory, vCPUs, vifs and vbds."""
    ns = netns()
    assert cli(rd, "create", cfgs("topdom", maxmem=48, vcpus=2,
                                  vif=[f"bridge=pxbrt, netns={ns.name}"])).returncode == 0
    assert wait_until(lambda: rows(rd).get("topdom", {}).get("state") == "-b----")
    img = tmp_path / "top.img"
    img.write_bytes(bytes(1 << 20))
    assert cli(rd, "block-attach", "topdom", f"vdev=xvdb, target={img}").returncode == 0
    r = cli(rd, "top", "-b", "-i", "2", "-d", "1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert r.stderr == "" and "\x1b" not in r.stdout
    assert lines[0] == XENTOP_HEADER and lines[3] == XENTOP_HEADER and len(lines) == 6
    for i, first in ((1, True), (4, False)):
        d0, dom = (XENTOP_ROW.match(line) for line in lines[i:i + 2])
        assert d0 and dom, lines[i:i + 2]
        assert d0["name"] == "  Domain-0" and dom["name"] == "    topdom"   # by name
        assert (d0["maxmem"], d0["max_pct"]) == ("  no limit", "      n/a")
        assert d0["state"] == "-----r" and dom["state"] == "--b---"
        assert (int(dom["mem"]), int(dom["maxmem"]), int(dom["vcpus"])) == (32768, 49152, 2)
        total_kb = int(d0["mem"])          # Domain-0 is the host: all of it
        assert float(dom["max_pct"]) == round(49152 * 100 / total_kb, 1)
        assert (int(dom["nets"]), int(dom["vbds"]), int(dom["ssid"])) == (1, 1, 0)
        # mini-OS has no blkfront/netfront: the backends count nothing
        assert [int(dom[k]) for k in ("nettx", "netrx", "oo", "rd", "wr", "rsect", "wsect")] \
            == [0] * 7
        if first:                          # no earlier sample: xentop prints 0.0
            assert d0["cpu_pct"] == dom["cpu_pct"] == "   0.0"
    r = cli(rd, "top", "-b", "-i", "1", "-d", "0", "-f", "-x", "-n", "-v")
    lines = r.stdout.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("    topdom "))
    # only online vCPUs (mini-OS never brings vCPU 1 up); VCPUS counts both, as xentop
    assert re.fullmatch(r"VCPUs\(sec\):   0: +\d+s", lines[i + 1]), lines[i + 1]
    assert re.fullmatch(r"Net0 RX: +0bytes +0pkts +0err +0drop  TX: +0bytes +0pkts +0err +0drop",
                        lines[i + 2]), lines[i + 2]
    assert lines[i + 3] == ("VBD BlkBack 51728 [ca:10]  OO:        0   RD:        0   WR:"
                            "        0   RSECT:          0   WSECT:          0")
    # without -b: xentop's summary above the table, the screen cleared first
    out = cli(rd, "top", "-i", "1").stdout
    assert out.startswith("\x1b[H\x1b[2Jxentop - ")
    summ = out.split("\n")
    assert re.fullmatch(r"xentop - \d\d:\d\d:\d\d   Xen 4\.17\S*", summ[0][len("\x1b[H\x1b[2J"):])
    assert summ[1] == "2 domains: 1 running, 1 blocked, 0 paused, 0 crashed, 0 dying, 0 shutdown "
    assert re.fullmatch(r"Mem: \d+k total, \d+k used, \d+k free    CPUs: \d+ @ \d+MHz", summ[2])
    assert summ[3] == XENTOP_HEADER


def test_top_table_formats():
    """xentop's column widening, '-' for vbds without statistics, names cut
    to 10 characters, state letters in xentop's order, CPU(%) between samples."""
    from pyxen.toolstack.xentop import TopOptions, table
    host = {"total_kb": 1 << 20, "free_kb": 1 << 19, "nr_cpus": 2, "cpu_mhz": 2000,
            "xen_version": "4.17.2"}
    dom = {"name": "a-very-long-name", "domid": 5, "shutdown": True, "reason": "crash",
           "cpu_time": 12.9, "mem_kb": 1 << 18, "max_kb": 1 << 18, "vcpus": 1,
           "nets": [{"tx_bytes": 123456789012, "rx_bytes": 5 << 10}],
           "vbds": [{"devid": 51712, "error": True}]}
    prev = {"when": 1.0, "domains": [dict(dom, cpu_time=10.9)]}
    lines = table({"when": 5.0, "host": host, "domains": [dom]}, prev)
    assert lines[0].split() == [f.header for f in __import__(
        "pyxen.toolstack.xentop", fromlist=["FIELDS"]).FIELDS]
    assert " NETS  NETTX(k) NETRX(k) VBDS " in lines[0]          # NETTX widened to 9
    assert lines[1] == ("a-very-lon ---c--         12   50.0     262144   25.0     262144      "
                        "25.0     1    1 120563270        5    1        -        -        -"
                        "          -          -    0")
    full = table({"when": 5.0, "host": host, "domains": [dom]}, None, TopOptions(full_name=True))
    assert full[1].startswith("a-very-long-name ---c--") and full[0].startswith("            NAME")


def test_sched_credit2_is_sched_credits_settings(rd, cfgs):
    """xl sched-credit2's options, messages and listing (xl_sched.c), over
    the weight and cap sched-credit shows."""
    assert cli(rd, "create", cfgs("c2")).returncode == 0
    assert wait_until(lambda: "c2" in rows(rd))
    domid = rows(rd)["c2"]["id"]
    r = cli(rd, "sched-credit2", "-d", "c2", "-w", "512", "-c", "50")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    head = "%-33s %4s %6s %4s" % ("Name", "ID", "Weight", "Cap")
    r = cli(rd, "sched-credit2", "-d", "c2")
    assert r.stdout.splitlines() == [head, "%-33s %4d %6d %4d" % ("c2", domid, 512, 50)]
    assert cli(rd, "sched-credit", "-d", "c2").stdout == r.stdout      # the same settings
    assert cli(rd, "sched-credit", "-d", "c2", "-w", "128").returncode == 0
    assert cli(rd, "sched-credit2", "--domain=c2").stdout.splitlines()[1].split()[2] == "128"
    # without -d, xl lists the pools of its scheduler (xl_sched.c sched_domain_output):
    # Pool-0 is a credit pool, so sched-credit2 lists nothing (tests/toolstack/test_cpupool.py
    # lists a credit2 pool)
    assert cli(rd, "sched-credit2").stdout == ""
    assert cli(rd, "sched-credit2", "-p", "Pool-0").stdout == ""
    out = cli(rd, "sched-credit").stdout.splitlines()
    assert out[:3] == ["Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us", head,
                       "%-33s %4d %6d %4d" % ("Domain-0", 0, 256, 0)]
    assert out[3] == "%-33s %4d %6d %4d" % ("c2", domid, 128, 50)
    assert cli(rd, "sched-credit2", "-s").stdout == "Cpupool Pool-0: ratelimit=1000us\n"
    for argv, msg in ((("-w", "300"), "Must specify a domain.\n"),
                      (("-p", "Pool-0", "-d", "c2"),
                       "Specifying a cpupool is not allowed with other options.\n"),
                      (("-p", "Pool-1"), "unknown cpupool 'Pool-1'\n")):
        r = cli(rd, "sched-credit2", *argv)
        assert (r.returncode, r.stderr, r.stdout) == (1, msg, ""), argv
    r = cli(rd, "sched-credit2", "-s", "-r", "500")
    assert r.returncode == 1 and r.stderr.endswith("libxl_sched_credit2_params_set failed.\n")
    r = cli(rd, "sched-credit2", "-d", "c2", "-w", "0")
    assert r.returncode == 1 and r.stderr.endswith("libxl_domain_sched_params_set failed.\n")
    r = cli(rd, "sched-credit2", "-d", "nosuch")
    assert r.returncode == 1 and "nosuch is an invalid domain identifier" in r.stderr


def test_config_update_is_used_at_the_next_reboot(rd, cfgs, tmp_path):
    """xl config-update: xl's warning and messages; the running domain and
    list -l keep the old config; the reboot builds the new one (new UUID, as
    xl's parse without uuid=)."""
    cfg = cfgs("cu", uuid="0badc0de-0000-4000-8000-0000000000cc")
    assert cli(rd, "create", cfg).returncode == 0
    assert wait_until(lambda: rows(rd).get("cu", {}).get("state") == "-b----")
    domid = rows(rd)["cu"]["id"]
    new = tmp_path / "cu-new.cfg"
    new.write_text(Path(cfg).read_text().replace("memory = 32", "memory = 40")
                   .replace('uuid = "0badc0de-0000-4000-8000-0000000000cc"\n', ""))
    warning = ("WARNING: xl now has better capability to manage domain configuration, "
               "avoid using this command when possible\n")
    r = cli(rd, "config-update", "cu", str(new), "maxmem=56", "-d")
    assert r.returncode == 0, r.stderr
    assert r.stderr == warning + f"setting dom{domid} configuration\n"
    b = json.loads(r.stdout)["b_info"]
    assert (b["target_memkb"], b["max_memkb"]) == (40 * 1024, 56 * 1024)
    # nothing changes before the restart
    c = json.loads(cli(rd, "list", "-l", "cu").stdout)[0]["config"]
    assert c["b_info"]["max_memkb"] == 32768
    assert c["c_info"]["uuid"] == "0badc0de-0000-4000-8000-0000000000cc"
    assert rows(rd)["cu"]["mem"] == 32
    assert cli(rd, "reboot", "cu").returncode == 0
    assert wait_until(lambda: rows(rd).get("cu", {}).get("id", domid) != domid, 20)
    assert wait_until(lambda: rows(rd)["cu"]["state"] == "-b----")
    assert rows(rd)["cu"]["mem"] == 40
    c = json.loads(cli(rd, "list", "-l", "cu").stdout)[0]["config"]
    assert c["b_info"]["max_memkb"] == 56 * 1024
    assert c["c_info"]["uuid"] != "0badc0de-0000-4000-8000-0000000000cc"
    # used once: the next reboot keeps what runs now
    domid2 = rows(rd)["cu"]["id"]
    assert cli(rd, "reboot", "cu").returncode == 0
    assert wait_until(lambda: rows(rd).get("cu", {}).get("id", domid2) != domid2, 20)
    assert wait_until(lambda: rows(rd)["cu"]["state"] == "-b----")
    assert rows(rd)["cu"]["mem"] == 40

    r = cli(rd, "config-update", "cu")
    assert (r.returncode, r.stderr) == (1, warning + "Config file not specified\n")
    r = cli(rd, "config-update", "nosuch", str(new))
    assert r.returncode == 1 and r.stderr.startswith(warning) and \
        "nosuch is an invalid domain identifier" in r.stderr
    r = cli(rd, "config-update", "cu", "-f", str(tmp_path / "absent.cfg"))
    assert r.stderr.endswith(f"Failed to read config file: {tmp_path / 'absent.cfg'}: "
                             "No such file or directory\n") and r.returncode == 1
    bad = tmp_path / "bad.cfg"
    bad.write_text('name = "cu"\nmemory = "lots"\n')
    r = cli(rd, "config-update", "cu", str(bad))
    assert r.returncode == 1 and f"{bad}:2:" in r.stderr and "setting dom" not in r.stderr


def test_config_update_outlives_a_pyxend_restart(rd, cfgs, tmp_path):
    """The config kept for the next restart is in the domain's record: a new
    pyxend finds it and the reboot uses it."""
    cfg = cfgs("cup")
    assert cli(rd, "create", cfg).returncode == 0
    assert wait_until(lambda: rows(rd).get("cup", {}).get("state") == "-b----")
    domid = rows(rd)["cup"]["id"]
    new = tmp_path / "cup-new.cfg"
    new.write_text(Path(cfg).read_text().replace("memory = 32", "memory = 24"))
    assert cli(rd, "config-update", "cup", str(new)).returncode == 0
    os.kill(daemon_pid(rd), signal.SIGKILL)
    assert wait_until(lambda: cli(rd, "list").returncode == 1)
    start_daemon(rd)
    assert rows(rd)["cup"] == {"id": domid, "mem": 32, "vcpus": 1, "state": "-b----"}
    assert cli(rd, "reboot", "cup").returncode == 0
    assert wait_until(lambda: rows(rd).get("cup", {}).get("id", domid) != domid, 20)
    assert rows(rd)["cup"]["mem"] == 24


def test_xl_conf_keys_as_xl_reads_them(tmp_path):
    """xl.conf: the keys pyxen applies, xl's deprecation and invalid-value
    messages, notes for the keys it does not use, warnings for unknown ones,
    FILE:LINE for syntax errors."""
    from pyxen.toolstack.xlcfg import XlCfgError, parse
    from pyxen.toolstack.xlconf import XlConf, from_text, load
    conf = from_text('defaultbridge = "old"\nvif.default.bridge = "br1"\nvifscript = "vif-route"\n'
                     'max_maptrack_frames = 0x100\nautoballoon = "off"\noutput_format = "sxp"\n'
                     'domid_policy = "xen"\nclaim_mode = 1\nfrobnicate = 3\n', "/x/xl.conf")
    assert conf.vif == {"bridge": "br1", "script": "vif-route"}
    assert conf.max_maptrack_frames == 256 and conf.output_format == "json"
    assert conf.warnings == (
        "the global config option defaultbridge is deprecated, please switch to "
        "vif.default.bridge",
        "the global config option vifscript is deprecated, please switch to "
        "vif.default.script",
        '/x/xl.conf:6: warning: output_format "sxp" is not supported by pyxen: JSON is printed',
        "/x/xl.conf:9: warning: unknown xl.conf setting 'frobnicate' (ignored)")
    assert conf.notes == ("/x/xl.conf:5: note: autoballoon is not used by pyxen: the host is "
                          "not ballooned: pyxend's memory limit (pyxend --mem-limit) bounds "
                          "what domains get",)
    assert from_text('output_format = "yaml"\n', "f").warnings == \
        ('invalid default output format "yaml"',)
    # the vif defaults fill in only what an entry leaves out
    assert conf.vif_spec("mac=00:16:3e:00:00:01") == \
        "mac=00:16:3e:00:00:01, bridge=br1, script=vif-route"
    assert conf.vif_spec("bridge=mine, script=vif-bridge,") == "bridge=mine, script=vif-bridge,"
    assert conf.vif_spec("") == "bridge=br1, script=vif-route"
    # pyxend gets them back from defaults()
    back = XlConf.from_defaults(conf.defaults())
    assert (back.vif, back.max_maptrack_frames) == (conf.vif, 256)
    cfg = parse('vif = ["mac=00:16:3e:00:00:02", "bridge=b2"]\n', "d.cfg")
    conf.apply(cfg)
    assert cfg["vif"] == ["mac=00:16:3e:00:00:02, bridge=br1, script=vif-route",
                          "bridge=b2, script=vif-route"]
    assert cfg["max_maptrack_frames"] == 256 and cfg.location("max_maptrack_frames") == \
        "/x/xl.conf:4"
    for text, where in (('vif.default.bridge = "br0\n', "f:1:"),
                        ("max_maptrack_frames = 4096\n", "f:1:"),
                        ('lockfile="/x"\nmax_maptrack_frames = "many"\n', "f:2:")):
        try:
            from_text(text, "f")
            raise AssertionError(text)
        except XlCfgError as e:
            assert str(e).startswith(where), str(e)
    assert load(str(tmp_path / "absent.conf")).warnings == \
        (f"Failed to read config file: {tmp_path / 'absent.conf'}: No such file or directory",)


def test_xl_conf_applies_to_create_and_network_attach(netns, rd, cfgs, tmp_path, monkeypatch):
    """$PYXEN_XL_CONF (else /etc/xen/xl.conf): vif.default.bridge puts the
    vifs of create and network-attach without bridge= on that bridge,
    max_maptrack_frames is the configs' default; its notes and warnings are
    printed; a syntax error stops the command at FILE:LINE."""
    ns = netns()
    conf = tmp_path / "xl.conf"
    conf.write_text('## Global XL config file ##\nvif.default.bridge = "pxbrc"\n'
                    "max_maptrack_frames = 256\nautoballoon = \"off\"\nbogus = 1\n")
    monkeypatch.setenv("PYXEN_XL_CONF", str(conf))
    cfg = cfgs("xc", vif=[f"netns={ns.name}"])
    r = cli(rd, "create", "-n", cfg)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[:2] == [      # the warnings, then the notes
        f"{conf}:5: warning: unknown xl.conf setting 'bogus' (ignored)",
        f"{conf}:4: note: autoballoon is not used by pyxen: the host is not ballooned: "
        "pyxend's memory limit (pyxend --mem-limit) bounds what domains get"]
    c = json.loads(r.stdout)
    assert c["b_info"]["max_maptrack_frames"] == 256 and c["nics"][0]["bridge"] == "pxbrc"
    r = cli(rd, "create", cfg, "max_maptrack_frames=512")
    assert r.returncode == 0, r.stderr
    domid = rows(rd)["xc"]["id"]
    ls = ns.links()
    assert ls[f"vif{domid}.0"].get_attr("IFLA_MASTER") == ls["pxbrc"]["index"]
    r = cli(rd, "network-attach", "xc", f"netns={ns.name}")
    assert r.returncode == 0, r.stderr
    ls = ns.links()
    assert ls[f"vif{domid}.1"].get_attr("IFLA_MASTER") == ls["pxbrc"]["index"]
    c = json.loads(cli(rd, "list", "-l", "xc").stdout)[0]["config"]
    assert c["b_info"]["max_maptrack_frames"] == 512          # the config's own wins
    assert [n["bridge"] for n in c["nics"]] == ["pxbrc", "pxbrc"]
    conf.write_text('vif.default.bridge = "pxbrc"\noutput_format = sxp\n')
    r = cli(rd, "create", cfgs("xc2"))
    assert r.returncode == 1 and r.stderr.startswith(f"pyxen: {conf}:2: ") and "xc2" not in rows(rd)
    conf.write_text('output_format = "sxp"\n')
    r = cli(rd, "list", "-l", "xc")
    assert r.stderr == f'{conf}:1: warning: output_format "sxp" is not supported by pyxen: ' \
        "JSON is printed\n" and json.loads(r.stdout)[0]["domid"] == domid


def test_trigger_nmi_reaches_a_pv_guest_and_the_rest_fail_as_on_xen(rd, cfgs):
    """xl trigger on a PV domain: `nmi` reaches the NMI callback the guest
    registered (the nmi guest, blocked, waits for one after its own checks
    and then powers off with SUCCESS); power and sleep are an HVM domain's
    buttons, so they fail with libxl's error and xl still succeeds; a vCPU
    the domain lacks fails (-ESRCH); an unknown trigger and button are xl's
    errors; button-press is trigger's deprecated form."""
    assert cli(rd, "create", cfgs("nmi", guest="nmi", extra="external=60",
                                  on_poweroff="preserve")).returncode == 0
    assert wait_until(lambda: "nmi" in rows(rd))
    domid = rows(rd)["nmi"]["id"]
    log = rd / "log" / f"domain-{domid}.log"
    assert wait_until(lambda: log.exists() and b"waiting for an NMI" in log.read_bytes(), 60)
    r = cli(rd, "trigger", "nmi", "power")
    assert r.returncode == 0 and r.stderr.endswith(
        f"Domain {domid}:Send trigger 'power' failed: Invalid argument\n"), r.stderr
    r = cli(rd, "button-press", "nmi", "sleep")
    assert r.returncode == 0 and r.stderr.startswith('WARNING: "button-press" is deprecated')
    assert "Send trigger 'sleep' failed: Invalid argument" in r.stderr
    r = cli(rd, "trigger", "nmi", "nmi", "5")
    assert r.returncode == 0 and "Send trigger 'nmi' failed: No such process" in r.stderr
    r = cli(rd, "trigger", "nmi", "bogus")
    assert r.returncode == 1 and r.stderr == 'Invalid trigger "bogus"\n'
    r = cli(rd, "qemu-monitor-command", "nmi", "info status")
    assert r.returncode == 1 and "is not an HVM domain" in r.stderr, r.stderr
    r = cli(rd, "button-press", "nmi", "reset")
    assert r.returncode == 1 and r.stderr.endswith("reset is an invalid button identifier\n")
    assert b"Test result:" not in log.read_bytes(), "none of those reached the guest"
    r = cli(rd, "trigger", "nmi", "nmi")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert wait_until(lambda: b"Test result:" in log.read_bytes(), 60), log.read_bytes()[-2000:]
    assert b"Test result: SUCCESS" in log.read_bytes(), log.read_bytes().decode()
    assert b"an NMI from the toolstack woke the blocked vCPU (4 NMIs)" in log.read_bytes()


def test_vm_list_shows_the_guests_by_uuid(rd, cfgs):
    """xl vm-list: the header and one line per guest (not Domain-0), UUID,
    id and name in xl's columns; the UUID is the one list -v shows."""
    assert cli(rd, "create", cfgs("listed")).returncode == 0
    assert wait_until(lambda: "listed" in rows(rd))
    domid = rows(rd)["listed"]["id"]
    uuid = next(line.split()[6] for line in cli(rd, "list", "-v").stdout.splitlines()
                if line.startswith("listed "))
    r = cli(rd, "vm-list")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["UUID                                  ID    name",
                                     f"{uuid}  {domid}    {'listed':<30}"]
