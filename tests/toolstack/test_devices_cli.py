"""PV device management from the command line, on mini-OS guests (no
frontend: the backend waits in InitWait), and the bad input an
administrator can give."""
from __future__ import annotations

import os

from daemon_helpers import cli, rows, start_daemon, wait_until
from netns_helpers import host_links, netns  # noqa: F401  (fixture)


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
    assert r.returncode == 1 and "Error: Device xvdb not connected." in r.stderr
    r = cli(rd, "block-attach", "d1", "vdev=xvdc")
    assert r.returncode == 1 and "target" in r.stderr


def test_network_attach_puts_a_tap_on_a_bridge_in_a_namespace(netns, rd, cfgs):
    """vif= and network-attach with netns=NAME (pyxen's extension): the TAP
    device vif<domid>.<n> is on the bridge (created when missing) inside the
    namespace and never stays in the host's; detach and destroy remove it."""
    ns = netns()
    br = "pxbr0"
    spec = f"bridge={br}, netns={ns.name}"
    r = cli(rd, "create", cfgs("n1", vif=[f"{spec}, mac=00:16:3e:11:22:33"]))
    assert r.returncode == 0, r.stderr
    did = rows(rd)["n1"]["id"]
    ls = ns.links()
    assert br in ls and f"vif{did}.0" in ls
    assert ls[f"vif{did}.0"].get_attr("IFLA_MASTER") == ls[br]["index"]
    # a name of this run's own: nothing else would put it in the host's namespace
    mine = f"pxt{os.getpid() % 100000}v1"
    r = cli(rd, "network-attach", "n1", f"bridge={br},", f"netns={ns.name},", f"vifname={mine}")
    assert r.returncode == 0, r.stderr
    ls = ns.links()
    assert ls[mine].get_attr("IFLA_MASTER") == ls[br]["index"]
    assert not {br, mine} & host_links()
    out = cli(rd, "network-list", "n1").stdout.splitlines()
    assert out[0].startswith("Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref")
    assert [l.split()[0] for l in out[1:]] == ["0", "1"]
    assert out[1].split()[2] == "00:16:3e:11:22:33"
    assert cli(rd, "network-detach", "n1", "00:16:3e:11:22:33").returncode == 0
    assert wait_until(lambda: f"vif{did}.0" not in ns.links(), 10)
    r = cli(rd, "network-detach", "n1", "7")
    assert r.returncode == 1 and "Unknown device 7." in r.stderr
    r = cli(rd, "network-attach", "n1", "mac=zz:00:00:00:00:00")
    assert r.returncode == 1 and "mac" in r.stderr
    assert cli(rd, "destroy", "n1").returncode == 0
    assert wait_until(lambda: mine not in ns.links(), 10)
    assert set(ns.links()) == {"lo", br}


def test_pyxend_in_a_namespace_keeps_its_vifs_there(netns, tmp_path, cfgs):
    """pyxend started in a network namespace (ip netns exec) puts a plain
    xl vif (bridge= only) on a bridge in its own namespace."""
    ns = netns()
    d = tmp_path / "nsrun"
    d.mkdir()
    proc = start_daemon(d, prefix=("ip", "netns", "exec", ns.name))
    try:
        r = cli(d, "create", cfgs("n2", vif=["bridge=pxbr1"]))
        assert r.returncode == 0, r.stderr
        did = rows(d)["n2"]["id"]
        ls = ns.links()
        assert ls[f"vif{did}.0"].get_attr("IFLA_MASTER") == ls["pxbr1"]["index"]
        assert "pxbr1" not in host_links()
        assert cli(d, "destroy", "n2").returncode == 0
        assert wait_until(lambda: f"vif{did}.0" not in ns.links(), 10)
    finally:
        for line in cli(d, "list").stdout.splitlines()[2:]:
            cli(d, "destroy", line.split()[1])
        proc.kill()
        proc.wait()


def test_a_restarted_pyxend_puts_the_vif_back_in_its_namespace(netns, tmp_path, cfgs):
    """kill -9 pyxend: its TAP devices go with it; the next pyxend finds the
    domain's vif in XenStore and plugs it again, same name, same namespace."""
    ns = netns()
    d = tmp_path / "rsrun"
    d.mkdir()
    mine = f"pxt{os.getpid() % 100000}r"
    procs = [start_daemon(d)]
    try:
        r = cli(d, "create", cfgs("n3", vif=[f"bridge=pxbr2, netns={ns.name}, vifname={mine}"]))
        assert r.returncode == 0, r.stderr
        assert mine in ns.links()
        procs[-1].kill()
        procs[-1].wait()
        assert wait_until(lambda: mine not in ns.links(), 10)
        procs.append(start_daemon(d))
        assert wait_until(lambda: mine in ns.links(), 10)
        ls = ns.links()
        assert ls[mine].get_attr("IFLA_MASTER") == ls["pxbr2"]["index"]
        assert mine not in host_links()
    finally:
        for line in cli(d, "list").stdout.splitlines()[2:]:
            cli(d, "destroy", line.split()[1])
        for p in procs:
            p.kill()
            p.wait()


def test_a_bridge_name_that_is_not_a_bridge_and_a_missing_namespace(netns, rd, cfgs):
    ns = netns()
    r = cli(rd, "create", cfgs("nb", vif=[f"bridge=lo, netns={ns.name}"]))
    assert r.returncode == 1
    assert f"lo exists in network namespace {ns.name} and is not a bridge" in r.stderr
    gone = f"{ns.name}-gone"
    r = cli(rd, "create", cfgs("nm", vif=[f"bridge=pxbr0, netns={gone}"]))
    assert r.returncode == 1
    assert f"network namespace {gone} does not exist (create it with: ip netns add" in r.stderr
    r = cli(rd, "create", cfgs("nx", vif=["bridge=pxbr0, netns=../../proc/1/ns/net"]))
    assert r.returncode == 1 and "bad netns '../../proc/1/ns/net'" in r.stderr
    assert set(rows(rd)) == {"Domain-0"}
    # the TAP device made for the refused vif is gone too
    assert set(ns.links()) == {"lo"}
