"""The host side of a vif: a TAP device (one file descriptor per queue,
IFF_MULTI_QUEUE, with a virtio-net header so checksum and segmentation
offloads cross over) attached to a Linux bridge. Bridges and links are
managed over netlink with pyroute2."""
from __future__ import annotations

import fcntl
import os
import struct

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE, IFF_VNET_HDR = 0x0002, 0x1000, 0x0100, 0x4000
VNET_HDR = struct.Struct("<BBHHHH")       # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID = 1, 2
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6 = 0, 1, 3, 4
XEN_VIF_MAC = "fe:ff:ff:ff:ff:ff"         # what Xen gives the host end of every vif


class NetDeviceError(Exception):
    """A host network device cannot be set up (the message says why)."""


def open_queue(ifname: str) -> int:
    """One queue of the TAP device `ifname` (creating the device with the first)."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise NetDeviceError(f"cannot open /dev/net/tun: {e.strerror}") from None
    ifr = struct.pack("16sH22x", ifname.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR |
                      IFF_MULTI_QUEUE)
    try:
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as e:
        os.close(fd)
        raise NetDeviceError(f"cannot create TAP device {ifname}: {e.strerror}") from None
    return fd


def plug(ifname: str, bridge: str, mtu: int | None = None) -> None:
    """Put `ifname` on `bridge` (created when it does not exist) and bring both up."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError
    with IPRoute() as ip:
        tap = ip.link_lookup(ifname=ifname)
        if not tap:
            raise NetDeviceError(f"{ifname} vanished")
        found = ip.link_lookup(ifname=bridge)
        if found:
            link = ip.get_links(found[0])[0]
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            if kind != "bridge":
                raise NetDeviceError(f"{bridge} exists and is not a bridge "
                                     f"(it is a {kind or 'plain'} device)")
            br = found[0]
        else:
            try:
                ip.link("add", ifname=bridge, kind="bridge")
            except NetlinkError as e:
                raise NetDeviceError(f"cannot create bridge {bridge}: {e}") from None
            br = ip.link_lookup(ifname=bridge)[0]
            ip.link("set", index=br, state="up")
        kw = {"mtu": mtu} if mtu else {}
        ip.link("set", index=tap[0], address=XEN_VIF_MAC, **kw)
        ip.link("set", index=tap[0], master=br, state="up")


def unplug(ifname: str) -> None:
    from pyroute2 import IPRoute
    with IPRoute() as ip:
        found = ip.link_lookup(ifname=ifname)
        if found:
            try:
                ip.link("set", index=found[0], state="down")
            except Exception:
                pass


def checksum_position(pkt: bytes) -> tuple[int, int] | None:
    """(csum_start, csum_offset) of the TCP/UDP checksum of an Ethernet frame,
    for a packet whose checksum the sender left to be filled in."""
    off = 12
    etype = int.from_bytes(pkt[off:off + 2], "big")
    off += 2
    while etype in (0x8100, 0x88A8) and len(pkt) >= off + 4:
        etype = int.from_bytes(pkt[off + 2:off + 4], "big")
        off += 4
    if etype == 0x0800 and len(pkt) >= off + 20:
        ihl = (pkt[off] & 0xF) * 4
        proto = pkt[off + 9]
        l4 = off + ihl
    elif etype == 0x86DD and len(pkt) >= off + 40:
        proto = pkt[off + 6]
        l4 = off + 40
    else:
        return None
    if proto == 6:
        return l4, 16
    if proto == 17:
        return l4, 6
    return None
