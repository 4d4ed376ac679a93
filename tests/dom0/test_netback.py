"""netback against a frontend played by the test: packets from the guest's
tx ring come out of the TAP device into the host's network stack (checksum
offload and fragments included), packets for the guest land in the buffers
it posted, and an impossible ring shuts only that vif down."""
from __future__ import annotations

import os
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
from pyxen.toolstack.devspec import parse_vif_spec

from pvfront import Frontend, RingWriter, RING_FRAME, DATA_FRAME

GUEST_MAC = bytes.fromhex("00163e0a0b0c")
HOST_IP, GUEST_IP = "10.233.0.1", "10.233.0.2"


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
def make_vif(kvm):
    made = []

    def make(extra=""):
        v = _make_vif(kvm, extra)
        made.append(v)
        return v
    yield make
    for v in made:
        v.cleanup()


def _make_vif(kvm, extra):
    from pyroute2 import IPRoute
    br = f"pxn{os.getpid() % 10000}"
    with IPRoute() as ip:         # a bridge left by a crashed run would take our subnet
        for link in ip.get_links():
            if link.get_attr("IFLA_IFNAME", "").startswith("pxn"):
                addrs = ip.get_addr(index=link["index"])
                if any(a.get_attr("IFA_ADDRESS") == HOST_IP for a in addrs):
                    ip.link("del", index=link["index"])
    xs = XenStoreServer(state_file=None)
    dom = Domain(name="n", memory_mb=16, kvm=kvm, domid=5)
    devs = DomainDevices(xs, LocalGuest(dom))
    dev = devs.attach_vif(parse_vif_spec(f"bridge={br}, mac=00:16:3e:0a:0b:0c{extra}", 0))
    with IPRoute() as ip:
        idx = ip.link_lookup(ifname=br)[0]
        ip.addr("add", index=idx, address=HOST_IP, prefixlen=24)
        br_mac = bytes.fromhex(ip.get_links(idx)[0].get_attr("IFLA_ADDRESS").replace(":", ""))
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

    class Vif:
        pass
    v = Vif()
    v.__dict__.update(dom=dom, fe=fe, tx=tx, rx=rx, port=port, dev=dev, br=br, br_mac=br_mac,
                      next_id=1)

    def cleanup():
        devs.close_all()
        dom.close()
        with IPRoute() as ip:
            for i in ip.link_lookup(ifname=br):
                ip.link("del", index=i)
    v.cleanup = cleanup
    return v


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
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
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
    from pyroute2 import IPRoute
    for i in range(8):                               # post 8 receive buffers
        frame = DATA_FRAME + 100 + i
        ref = vif.fe.grant(frame)
        vif.rx.push(struct.pack("<HxxI", 500 + i, ref), vif.port, publish=i == 7)
    with IPRoute() as ip:
        ip.neigh("add", dst=GUEST_IP, lladdr="00:16:3e:0a:0b:0c",
                 ifindex=ip.link_lookup(ifname=vif.br)[0], state="permanent")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
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
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
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
