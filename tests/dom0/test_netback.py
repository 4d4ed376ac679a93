"""netback against a frontend played by the test: packets from the guest's
tx ring come out of the TAP device into the host's network stack (checksum
offload and fragments included), packets for the guest land in the buffers
it posted, and an impossible ring shuts only that vif down.

Each vif is on a bridge in a network namespace of its own (vif key
netns=NAME): the bridge, its address and the TAP device live there, the
test's sockets are made there, and the host's namespace is left alone."""
from __future__ import annotations

import socket
import struct
import time

import pytest

from pyxen.dom0.backends import netback as N
from pyxen.dom0.backends import xenbus
from pyxen.dom0.backends.guest import LocalGuest
from pyxen.dom0.xenstore.server import XenStoreServer
from pyxen.hv.domain import Domain
from pyxen.toolstack.devices import DomainDevices
from pyxen.toolstack.devkinds import VIF
from pyxen.toolstack.devspec import parse_vif_spec

from netns_helpers import host_links, netns  # noqa: F401  (fixture)
from pvfront import Frontend, RingWriter, RING_FRAME, DATA_FRAME

GUEST_MAC = bytes.fromhex("00163e0a0b0c")
HOST_IP, GUEST_IP = "192.0.2.1", "192.0.2.2"          # TEST-NET-1, inside the namespace
BRIDGE = "pxbr0"


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def udp_frame(dst_mac: bytes, payload: bytes, dport: int, blank: bool) -> bytes:
    src, dst = socket.inet_aton(GUEST_IP), socket.inet_aton(HOST_IP)
    ulen = 8 + len(payload)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + ulen, 1, 0, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", 0xFFFF - csum(ip)) + ip[12:]
    # csum_blank: the checksum field holds the pseudo-header sum, the rest is left to offload
    pseudo = csum(src + dst + struct.pack("!BBH", 0, 17, ulen)) if blank else 0
    udp = struct.pack("!HHHH", 40000, dport, ulen, pseudo) + payload
    return dst_mac + GUEST_MAC + b"\x08\x00" + ip + udp


@pytest.fixture
def vif(make_vif):
    return make_vif()


@pytest.fixture
def make_vif(kvm, netns):
    made = []

    def make(extra=""):
        v = _make_vif(kvm, netns(), extra)
        made.append(v)
        return v
    yield make
    for v in made:
        v.cleanup()


def _make_vif(kvm, ns, extra):
    ns.bridge(BRIDGE, HOST_IP)
    xs = XenStoreServer(state_file=None)
    dom = Domain(name="n", memory_mb=16, kvm=kvm, domid=5)
    devs = DomainDevices(xs, LocalGuest(dom))
    try:
        dev = devs.attach(VIF, parse_vif_spec(
            f"bridge={BRIDGE}, netns={ns.name}, mac=00:16:3e:0a:0b:0c{extra}", 0))
        fe = Frontend(dom, xs, "vif", 0)
        fe.wait_be_state(xenbus.INITWAIT)
        tx = RingWriter(fe, RING_FRAME, N.TX_SLOT)
        rx = RingWriter(fe, RING_FRAME + 1, N.RX_SLOT)
        tx_ref, rx_ref = fe.init_ring(RING_FRAME), fe.init_ring(RING_FRAME + 1)
        port = fe.alloc_port()
        fe.write({"tx-ring-ref": tx_ref, "rx-ring-ref": rx_ref, "event-channel": port,
                  "request-rx-copy": 1, "feature-sg": 1, "feature-rx-notify": 1,
                  "state": xenbus.CONNECTED})
        fe.wait_be_state(xenbus.CONNECTED)
        # the bridge's address once the vif is a port (a bridge takes its ports' lowest)
        br_mac = bytes.fromhex(ns.links()[BRIDGE].get_attr("IFLA_ADDRESS").replace(":", ""))
    except BaseException:
        devs.close_all()
        dom.close()
        raise

    class Vif:
        pass
    v = Vif()
    v.__dict__.update(dom=dom, fe=fe, tx=tx, rx=rx, port=port, dev=dev, ns=ns, br_mac=br_mac,
                      next_id=1)

    def cleanup():
        devs.close_all()
        dom.close()
    v.cleanup = cleanup
    return v


def test_the_vif_lives_in_the_named_namespace(vif):
    """vif5.0 is on the bridge inside the namespace, with Xen's host-side MAC,
    and nothing of it is in the host's namespace."""
    links = vif.ns.links()
    assert links["vif5.0"].get_attr("IFLA_MASTER") == links[BRIDGE]["index"]
    assert links["vif5.0"].get_attr("IFLA_ADDRESS") == "fe:ff:ff:ff:ff:ff"
    assert links["vif5.0"].get_attr("IFLA_OPERSTATE") != "DOWN"
    assert "vif5.0" not in host_links() and BRIDGE not in host_links()


def test_closing_the_vif_removes_its_tap_device(vif):
    vif.cleanup()
    assert "vif5.0" not in vif.ns.links()
    vif.cleanup = lambda: None


def send(v, frags, flags=0):
    """Put one packet on the tx ring: frags is a list of byte strings."""
    total = sum(len(f) for f in frags)
    ids = []
    for i, data in enumerate(frags):
        frame = DATA_FRAME + v.next_id
        v.fe.page(frame)[100:100 + len(data)] = data
        ref = v.fe.grant(frame, readonly=True)
        f = (flags if i == 0 else 0) | (N.TXF_MORE_DATA if i < len(frags) - 1 else 0)
        size = total if i == 0 else len(data)
        v.tx.push(struct.pack("<IHHHH", ref, 100, f, v.next_id, size), v.port,
                  publish=i == len(frags) - 1)
        ids.append(v.next_id)
        v.next_id += 1
    return ids


def test_guest_packets_reach_the_host_stack(vif):
    s = vif.ns.socket()
    s.bind((HOST_IP, 47000))
    s.settimeout(5)
    try:
        ids = send(vif, [udp_frame(vif.br_mac, b"plain", 47000, False)])
        ids += send(vif, [udp_frame(vif.br_mac, b"offloaded checksum", 47000, True)],
                    flags=N.TXF_CSUM_BLANK)
        frame = udp_frame(vif.br_mac, b"in two fragments" * 10, 47000, False)
        ids += send(vif, [frame[:60], frame[60:]])
        got = {s.recv(2000) for _ in range(3)}
        assert got == {b"plain", b"offloaded checksum", b"in two fragments" * 10}
        rsp = [struct.unpack_from("<Hh", r) for r in vif.tx.responses(4)]
        assert sorted(rsp) == [(i, 0) for i in ids]
        assert vif.dev.stats()["tx_packets"] == 3
    finally:
        s.close()


def test_host_packets_land_in_posted_buffers(vif):
    for i in range(8):                               # post 8 receive buffers
        frame = DATA_FRAME + 100 + i
        ref = vif.fe.grant(frame)
        vif.rx.push(struct.pack("<HxxI", 500 + i, ref), vif.port, publish=i == 7)
    with vif.ns.ipr() as ip:
        ip.neigh("add", dst=GUEST_IP, lladdr="00:16:3e:0a:0b:0c",
                 ifindex=ip.link_lookup(ifname=BRIDGE)[0], state="permanent")
    s = vif.ns.socket()
    try:
        s.sendto(b"hello guest", (GUEST_IP, 48000))
        # other traffic (multicast reports of the new bridge) may come first
        end = time.monotonic() + 10
        seen = []
        while time.monotonic() < end:
            rid, off, flags, status = struct.unpack_from("<HHHh", vif.rx.responses(1)[0])
            assert 500 <= rid < 508 and status > 0 and not flags & N.RXF_MORE_DATA
            data = bytes(vif.fe.page(DATA_FRAME + 100 + rid - 500)[off:off + status])
            seen.append(data[:14])
            if data.endswith(b"hello guest"):
                assert data[:6] == GUEST_MAC
                break
        else:
            raise AssertionError(f"not delivered; saw {seen}")
    finally:
        s.close()


def test_impossible_tx_ring_shuts_the_vif_down(vif):
    struct.pack_into("<I", vif.tx.p, 0, 4000)
    vif.fe.notify(vif.port)
    vif.fe.wait_be_state(xenbus.CLOSING)
    assert "ring" in vif.fe.read_be("error")
    assert not vif.dom.stopped


def test_rate_limit_holds_transmit_to_the_configured_rate(make_vif):
    """rate=200Kb/s@20ms: 25 KB/s, 500 bytes per 20 ms. Forty 1 KB packets
    (40 KB) cannot leave in less than about 1.5 s; without a rate they leave
    at once. (This checks the limiter works, not how fast pyxen is.)"""
    v = make_vif(", rate=200Kb/s@20ms")
    assert v.dev.rate == (500, 20000)
    s = v.ns.socket()
    s.bind((HOST_IP, 47001))
    s.settimeout(10)
    try:
        t0 = time.monotonic()
        for _ in range(40):
            send(v, [udp_frame(v.br_mac, b"r" * 958, 47001, False)])
        for _ in range(40):
            s.recv(2000)
        took = time.monotonic() - t0
    finally:
        s.close()
    assert took >= 1.4, f"40 KB left in {took:.2f} s at 25 KB/s"


def test_deleting_the_namespace_under_the_vif_closes_only_that_vif(vif):
    """The administrator deletes the namespace while the guest runs: the TAP
    device goes with it, the vif goes to Closing with an error, the domain
    and the backend process carry on."""
    for i in range(4):                               # the guest waits for packets
        ref = vif.fe.grant(DATA_FRAME + 100 + i)
        vif.rx.push(struct.pack("<HxxI", 500 + i, ref), vif.port, publish=i == 3)
    vif.ns.delete()
    # the kernel tears a deleted namespace's devices down from a work queue:
    # on a loaded host that took longer than 10 s once
    vif.fe.wait_be_state(xenbus.CLOSING, timeout=90)
    assert vif.fe.read_be("error")
    assert not vif.dom.stopped
