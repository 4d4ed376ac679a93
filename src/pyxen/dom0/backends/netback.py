"""netback: the backend of Xen's network protocol (public/io/netif.h), with
the host end of each vif a TAP device on a Linux bridge (in pyxend's network
namespace, or in a named one: netns=, see tap.py).

Guest transmit: requests name granted pages (one per fragment, more_data
chains them; extra-info slots carry GSO sizes); the packet is copied out and
written to the TAP device with a virtio-net header, so a checksum the guest
left blank (csum_blank) and TCP segmentation (gso) are done by the host
kernel. Guest receive: packets read from the TAP device are copied into the
pages the guest posted on its rx ring (rx-copy, the only mode Linux's
netfront speaks). Each queue has its own rings, event channel, TAP queue and
thread. `rate=` is a credit scheduler on transmit, as Xen's netback."""
from __future__ import annotations

import ctypes
import logging
import os
import struct
import time

from ...hv import abi
from ...hv.grant import GrantError
from . import tap
from .ring import BackRing, QueueWorker, RingError
from .xenbus import XenbusBackend, DeviceError

log = logging.getLogger("pyxen.netback")

TXF_CSUM_BLANK, TXF_DATA_VALIDATED = abi.NETTXF_csum_blank, abi.NETTXF_data_validated
TXF_MORE_DATA, TXF_EXTRA_INFO = abi.NETTXF_more_data, abi.NETTXF_extra_info
RXF_DATA_VALIDATED, RXF_CSUM_BLANK = abi.NETRXF_data_validated, abi.NETRXF_csum_blank
RXF_MORE_DATA = abi.NETRXF_more_data
EXTRA_GSO, EXTRA_FLAG_MORE = abi.XEN_NETIF_EXTRA_TYPE_GSO, abi.XEN_NETIF_EXTRA_FLAG_MORE
GSO_TCPV4, GSO_TCPV6 = abi.XEN_NETIF_GSO_TYPE_TCPV4, abi.XEN_NETIF_GSO_TYPE_TCPV6
RSP_NULL, RSP_OKAY = abi.NETIF_RSP_NULL, abi.NETIF_RSP_OKAY
RSP_ERROR, RSP_DROPPED = abi.NETIF_RSP_ERROR, abi.NETIF_RSP_DROPPED
# a ring slot holds a request or a response (a tx slot also an extra info)
TX_SLOT = max(ctypes.sizeof(abi.NetifTxRequest), ctypes.sizeof(abi.NetifTxResponse))   # 12
RX_SLOT = max(ctypes.sizeof(abi.NetifRxRequest), ctypes.sizeof(abi.NetifRxResponse))   # 8
MAX_SLOTS_PER_PACKET = 64                 # Linux's netback accepts 18 by default; be lenient
MAX_PACKET = 65536 + 14 + 4
MAX_QUEUES = 4
PAGE = 4096

_TXREQ = struct.Struct("<IHHHH")           # gref, offset, flags, id, size
_TXRSP = struct.Struct("<Hh")              # id, status
_RXREQ = struct.Struct("<HxxI")            # id, gref
_RXRSP = struct.Struct("<HHHh")            # id, offset, flags, status
_EXTRA_GSO = struct.Struct("<BBHBxH")      # type, flags, gso size, gso type, features
for _s, _c in ((_TXREQ, abi.NetifTxRequest), (_TXRSP, abi.NetifTxResponse),
               (_RXREQ, abi.NetifRxRequest), (_RXRSP, abi.NetifRxResponse),
               (_EXTRA_GSO, abi.NetifExtraInfoGso)):
    assert _s.size == ctypes.sizeof(_c), _c


class NetQueue(QueueWorker):
    def __init__(self, dev: "NetBackend", index: int, tx_ref: int, rx_ref: int, port: int,
                 tap_fd: int):
        g = dev.guest.grants
        tx_h, txv = g.map_ref(tx_ref, 0, False)
        try:
            rx_h, rxv = g.map_ref(rx_ref, 0, False)
        except GrantError:
            g.unmap(tx_h)
            raise
        self.tx = BackRing(txv, TX_SLOT, f"{dev} queue {index} tx")
        self.rx = BackRing(rxv, RX_SLOT, f"{dev} queue {index} rx")
        self.fd = tap_fd
        self.pending: bytes | None = None           # a received packet waiting for rx slots
        self.stats = {"tx_packets": 0, "tx_bytes": 0, "rx_packets": 0, "rx_bytes": 0,
                      "tx_errors": 0, "rx_dropped": 0}
        self.credit = dev.rate[0] if dev.rate else 0
        self.credit_at = time.monotonic()
        super().__init__(dev, index, port, [(tx_h, txv), (rx_h, rxv)])

    def work(self) -> list[int]:
        self._tx()
        return [self.fd] if self._rx() else []

    # --- guest transmit ---------------------------------------------------------------------------
    def _tx(self) -> None:
        ring = self.tx
        while True:
            avail = ring.unconsumed()
            done = 0
            while done < avail:
                used = self._tx_packet(avail - done)
                if used == 0:
                    break                          # the rest of a packet is not published yet
                done += used
            if ring.push():
                self.evt.notify()
            if done < avail:
                return
            if not ring.final_check():
                return

    def _tx_packet(self, avail: int) -> int:
        """Take one packet (first request, extra infos, fragments) off the tx
        ring; returns the number of slots used, 0 if it is incomplete."""
        ring = self.tx
        j = 0
        first = _TXREQ.unpack_from(ring.peek(j))
        j += 1
        gso = None
        extras = 0
        flags = first[2]
        if flags & TXF_EXTRA_INFO:
            while True:
                if j >= avail:
                    return 0
                ex = ring.peek(j)
                j += 1
                extras += 1
                if ex[0] == EXTRA_GSO:
                    _, _, size, gtype, _ = _EXTRA_GSO.unpack_from(ex)
                    gso = (size, gtype)
                if not ex[1] & EXTRA_FLAG_MORE:
                    break
                if extras > 8:
                    raise RingError(f"{ring.name}: endless chain of extra-info slots")
        frags = [first]
        cur = first
        while cur[2] & TXF_MORE_DATA:
            if j >= avail:
                return 0
            cur = _TXREQ.unpack_from(ring.peek(j))
            j += 1
            frags.append(cur)
            if len(frags) > MAX_SLOTS_PER_PACKET:
                raise RingError(f"{ring.name}: a packet of more than {MAX_SLOTS_PER_PACKET} slots")
        for _ in range(j):
            ring.take()
        status = self._send(frags, gso)
        ring.put(_TXRSP.pack(first[3], status))
        for _ in range(extras):
            ring.put(_TXRSP.pack(0, RSP_NULL))
        for f in frags[1:]:
            ring.put(_TXRSP.pack(f[3], status))
        return j

    def _send(self, frags, gso) -> int:
        first = frags[0]
        rest = sum(f[4] for f in frags[1:])
        lens = [first[4] - rest] + [f[4] for f in frags[1:]]
        if lens[0] < 14 or any(n < 0 for n in lens):
            self.stats["tx_errors"] += 1
            self.dev.complain(f"transmit request sizes do not add up ({first[4]} < {rest} + 14)")
            return RSP_ERROR
        data = bytearray()
        g = self.dev.guest.grants
        for (gref, off, _fl, _id, _sz), n in zip(frags, lens):
            if off + n > PAGE:
                self.stats["tx_errors"] += 1
                self.dev.complain(f"transmit fragment crosses its page ({off}+{n})")
                return RSP_ERROR
            try:
                h, view = g.map_ref(gref, 0, True)
            except GrantError as e:
                self.stats["tx_errors"] += 1
                self.dev.complain(f"transmit: {e}")
                return RSP_ERROR
            try:
                data += view[off:off + n]
            finally:
                view.release()
                g.unmap(h)
        hdr = (0, tap.GSO_NONE, 0, 0, 0, 0)
        if first[2] & TXF_CSUM_BLANK:
            pos = tap.checksum_position(data)
            if pos is not None:
                hdr = (tap.VNET_F_NEEDS_CSUM, tap.GSO_NONE, 0, 0, pos[0], pos[1])
                if gso is not None and gso[0] and gso[1] in (GSO_TCPV4, GSO_TCPV6) and \
                        len(data) > pos[0] + 13:
                    hlen = pos[0] + (data[pos[0] + 12] >> 4) * 4
                    gtype = tap.GSO_TCPV4 if gso[1] == GSO_TCPV4 else tap.GSO_TCPV6
                    hdr = (tap.VNET_F_NEEDS_CSUM, gtype, hlen, gso[0], pos[0], pos[1])
        elif first[2] & TXF_DATA_VALIDATED:
            hdr = (tap.VNET_F_DATA_VALID, tap.GSO_NONE, 0, 0, 0, 0)
        self._take_credit(len(data))
        try:
            os.write(self.fd, tap.VNET_HDR.pack(*hdr) + data)
        except OSError as e:
            self.stats["tx_errors"] += 1
            self.dev.complain(f"transmit to {self.dev.ifname}: {e.strerror}")
            return RSP_DROPPED
        self.stats["tx_packets"] += 1
        self.stats["tx_bytes"] += len(data)
        return RSP_OKAY

    def _take_credit(self, n: int) -> None:
        """rate=: wait until the interval's credit covers this packet."""
        rate = self.dev.rate
        if not rate:
            return
        per, interval = rate[0], rate[1] / 1e6
        while True:
            now = time.monotonic()
            if now - self.credit_at >= interval:
                periods = int((now - self.credit_at) / interval)
                self.credit = min(per, self.credit + periods * per)
                self.credit_at += periods * interval
            if self.credit >= n or (self.credit == per and n > per):
                self.credit -= n
                return
            time.sleep(max(0.0, self.credit_at + interval - now))

    # --- guest receive ------------------------------------------------------------------------------
    def _rx(self) -> bool:
        """Deliver what the TAP device holds into the guest's posted buffers.
        Returns True when we should wait for more packets (buffers are left)."""
        ring = self.rx
        delivered = 0
        try:
            while True:
                avail = ring.unconsumed()
                if self.pending is None:
                    if avail == 0:
                        if ring.final_check():
                            continue
                        return False               # wait for the guest to post buffers
                    try:
                        raw = os.read(self.fd, MAX_PACKET + tap.VNET_HDR.size)
                    except BlockingIOError:
                        return True
                    self.pending = raw
                raw = self.pending
                pkt = memoryview(raw)[tap.VNET_HDR.size:]
                need = (len(pkt) + PAGE - 1) // PAGE
                if need > 1 and not self.dev.frontend_sg:
                    self.pending = None
                    self.stats["rx_dropped"] += 1
                    continue
                if need > avail:
                    if ring.final_check() and ring.unconsumed() >= need:
                        continue
                    return False
                self.pending = None
                vflags = raw[0]
                self._deliver(pkt, need, vflags)
                delivered += 1
                if delivered % 32 == 0 and ring.push():
                    self.evt.notify()
        finally:
            if ring.push():
                self.evt.notify()

    def _deliver(self, pkt: memoryview, need: int, vflags: int) -> None:
        ring = self.rx
        g = self.dev.guest.grants
        flags0 = 0
        if vflags & tap.VNET_F_NEEDS_CSUM:
            flags0 = RXF_CSUM_BLANK | RXF_DATA_VALIDATED
        elif vflags & tap.VNET_F_DATA_VALID:
            flags0 = RXF_DATA_VALIDATED
        for k in range(need):
            rid, gref = _RXREQ.unpack_from(ring.take())
            chunk = pkt[k * PAGE:(k + 1) * PAGE]
            flags = (flags0 if k == 0 else 0) | (RXF_MORE_DATA if k < need - 1 else 0)
            try:
                h, view = g.map_ref(gref, 0, False)
            except GrantError as e:
                self.dev.complain(f"receive: {e}")
                ring.put(_RXRSP.pack(rid, 0, 0, RSP_ERROR))
                continue
            try:
                view[:len(chunk)] = chunk
            finally:
                view.release()
                g.unmap(h)
            ring.put(_RXRSP.pack(rid, 0, flags, len(chunk)))
        self.stats["rx_packets"] += 1
        self.stats["rx_bytes"] += len(pkt)


class NetBackend(XenbusBackend):
    kind = "vif"

    def __init__(self, xs, guest, devid: int, *, mac: str, bridge: str, ifname: str | None = None,
                 mtu: int | None = None, rate: tuple[int, int] | None = None,
                 netns: str | None = None):
        super().__init__(xs, guest, devid)
        self.mac = mac
        self.bridge = bridge
        self.netns = netns                          # None: pyxend's own namespace
        self.ifname = ifname or f"vif{guest.domid}.{devid}"
        self.mtu = mtu or 1500
        self.rate = rate
        self.tap_fds: list[int] = []
        self.frontend_sg = False

    def setup(self) -> None:
        if self.netns is None:
            self.tap_fds = [tap.open_queue(self.ifname)]
        else:
            self.tap_fds = [tap.create_in_netns(self.ifname, self.netns)]
        try:
            tap.plug(self.ifname, self.bridge, self.mtu, self.netns)
        except Exception:
            self.teardown()
            raise
        self.write_be({"feature-sg": 1, "feature-gso-tcpv4": 1, "feature-gso-tcpv6": 1,
                       "feature-ipv6-csum-offload": 1, "feature-rx-copy": 1,
                       "feature-rx-flip": 0, "feature-multicast-control": 0,
                       "feature-split-event-channels": 0, "feature-ctrl-ring": 0,
                       "multi-queue-max-queues": MAX_QUEUES, "mtu": self.mtu,
                       "hotplug-status": "connected"})

    def connect(self) -> None:
        if self.read_fe_int("request-rx-copy", 0) != 1:
            raise DeviceError("the frontend does not use rx-copy (the only receive mode served)")
        self.frontend_sg = self.read_fe_int("feature-sg", 0) == 1
        paths = self.queue_paths("tx-ring-ref", MAX_QUEUES)
        try:
            while len(self.tap_fds) < len(paths):
                self.tap_fds.append(tap.open_queue(self.ifname, self.netns))
        except tap.NetDeviceError as e:
            raise DeviceError(str(e)) from None

        def make(i: int, q: str) -> NetQueue:
            if self.read_fe(q + "event-channel-tx") is not None:
                raise DeviceError("split event channels were not offered")
            return NetQueue(self, i, self.read_fe_int(q + "tx-ring-ref"),
                            self.read_fe_int(q + "rx-ring-ref"),
                            self.read_fe_int(q + "event-channel"), self.tap_fds[i])
        self.open_queues(paths, make)
        log.info("%s connected: %s on %s%s, %d queue(s)", self, self.ifname, self.bridge,
                 f" in network namespace {self.netns}" if self.netns else "", len(self.queues))

    def disconnect(self) -> None:
        super().disconnect()
        while len(self.tap_fds) > 1:                # the device itself stays until teardown
            os.close(self.tap_fds.pop())

    def teardown(self) -> None:
        for fd in self.tap_fds:
            os.close(fd)
        self.tap_fds = []
