"""PV device management from the command line, on mini-OS guests (no
frontend: the backend waits in InitWait), and the bad input an
administrator can give."""
from __future__ import annotations

import os
import subprocess

import pytest

from daemon_helpers import cli, rows, wait_until
from test_e2e_cli import cfgs, rd  # noqa: F401  (fixtures)


def links():
    from pyroute2 import IPRoute
    with IPRoute() as ip:
        return {l.get_attr("IFLA_IFNAME"): l for l in ip.get_links()}


def test_missing_disk_and_unreadable_format_fail_create(rd, cfgs, tmp_path):
    cfg = cfgs("nodisk", disk=[f"vdev=xvdb, target={tmp_path}/missing.img"])
    r = cli(rd, "create", cfg)
    assert r.returncode == 1 and "missing.img: no such file" in r.stderr
    raw = tmp_path / "raw.img"
    raw.write_bytes(bytes(1 << 20))
    r = cli(rd, "create", cfgs("badfmt", disk=[f"vdev=xvdb, format=qcow2, target={raw}"]))
    assert r.returncode == 1 and "not in qcow2 format" in r.stderr
    assert set(rows(rd)) == {"Domain-0"}


def test_bad_disk_spec_names_file_and_line(rd, cfgs):
    cfg = cfgs("badspec", disk=["vdev=xvd!, target=/x"])
    r = cli(rd, "create", cfg)
    assert r.returncode == 1 and f"{cfg}:" in r.stderr and "xvd!" in r.stderr


def test_block_attach_list_detach_and_sharing(rd, cfgs, tmp_path):
    img = tmp_path / "shared.img"
    img.write_bytes(bytes(4 << 20))
    for n in ("d1", "d2"):
        assert cli(rd, "create", cfgs(n)).returncode == 0
    assert cli(rd, "block-attach", "d1", f"vdev=xvdb, target={img}").returncode == 0
    out = cli(rd, "block-list", "d1").stdout.splitlines()
    assert out[0] == "%-5s %-3s %-6s %-5s %-6s %-8s %-30s" % (
        "Vdev", "BE", "handle", "state", "evt-ch", "ring-ref", "BE-path")
    f = out[1].split()
    did = rows(rd)["d1"]["id"]
    assert f == ["51728", "0", str(did), "1", "-1", "-1", f"/local/domain/0/backend/vbd/{did}/51728"]
    # writable in two domains: refused unless forced
    r = cli(rd, "block-attach", "d2", f"vdev=xvdb, target={img}")
    assert r.returncode == 1 and "already in use" in r.stderr
    assert cli(rd, "block-attach", "-f", "d2", f"vdev=xvdb, target={img}").returncode == 0
    # a frontend that never connected is not waited for
    assert cli(rd, "block-detach", "d1", "xvdb").returncode == 0
    assert len(cli(rd, "block-list", "d1").stdout.splitlines()) == 1
    r = cli(rd, "block-detach", "d1", "xvdb")
    assert r.returncode == 1 and "no disk xvdb" in r.stderr
    r = cli(rd, "block-attach", "d1", "vdev=xvdc")
    assert r.returncode == 1 and "target" in r.stderr


def test_network_attach_makes_a_tap_on_a_bridge(rd, cfgs):
    br = f"pxc{os.getpid() % 10000}"
    assert cli(rd, "create", cfgs("n1", vif=[f"bridge={br}, mac=00:16:3e:11:22:33"])).returncode == 0
    did = rows(rd)["n1"]["id"]
    try:
        ls = links()
        assert br in ls and f"vif{did}.0" in ls
        assert ls[f"vif{did}.0"].get_attr("IFLA_MASTER") == ls[br]["index"]
        assert cli(rd, "network-attach", "n1", f"bridge={br}").returncode == 0
        out = cli(rd, "network-list", "n1").stdout.splitlines()
        assert out[0].startswith("Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref")
        assert [l.split()[0] for l in out[1:]] == ["0", "1"]
        assert out[1].split()[2] == "00:16:3e:11:22:33"
        assert cli(rd, "network-detach", "n1", "00:16:3e:11:22:33").returncode == 0
        assert wait_until(lambda: f"vif{did}.0" not in links(), 10)
        r = cli(rd, "network-detach", "n1", "7")
        assert r.returncode == 1 and "Unknown device 7." in r.stderr
        r = cli(rd, "network-attach", "n1", "mac=zz:00:00:00:00:00")
        assert r.returncode == 1 and "mac" in r.stderr
        cli(rd, "destroy", "n1")
        assert wait_until(lambda: f"vif{did}.1" not in links(), 10)
    finally:
        subprocess.run(["ip", "link", "del", br], capture_output=True)


def test_a_bridge_name_that_is_not_a_bridge(rd, cfgs):
    r = cli(rd, "create", cfgs("nb", vif=["bridge=lo"]))
    assert r.returncode == 1 and "lo exists and is not a bridge" in r.stderr
    assert set(rows(rd)) == {"Domain-0"}
