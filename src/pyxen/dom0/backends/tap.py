"""The host side of a vif: a TAP device (one file descriptor per queue,
IFF_MULTI_QUEUE, with a virtio-net header so checksum and segmentation
offloads cross over) attached to a Linux bridge. Bridges and links are
managed over netlink with pyroute2.

The bridge may live in a named network namespace (`ip netns add NAME`, a
file /run/netns/NAME; the vif key netns=NAME, a pyxen extension): the TAP
device is created in pyxend's own namespace under a temporary name, moved
into NAME and renamed there, and enslaved to the bridge there. Netlink
sockets and the TAP queues opened after the first are made by a short-lived
thread that has entered NAME with setns(2) (a namespace is per thread; the
socket or queue keeps it), so pyxend itself never leaves its namespace and
never forks."""
from __future__ import annotations

import ctypes
import fcntl
import os
import re
import socket
import struct
import threading

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_MULTI_QUEUE, IFF_VNET_HDR = 0x0002, 0x1000, 0x0100, 0x4000
VNET_HDR = struct.Struct("<BBHHHH")       # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_F_NEEDS_CSUM, VNET_F_DATA_VALID = 1, 2
GSO_NONE, GSO_TCPV4, GSO_UDP, GSO_TCPV6 = 0, 1, 3, 4
XEN_VIF_MAC = "fe:ff:ff:ff:ff:ff"         # what Xen gives the host end of every vif
NETNS_RUN_DIR = "/run/netns"              # where `ip netns add` binds named namespaces
CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
#: a namespace name pyxen accepts: a plain file name in /run/netns
NETNS_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\Z")


class NetDeviceError(Exception):
    """A host network device cannot be set up (the message says why)."""


def netns_fd(name: str) -> int:
    """An open file descriptor of the named network namespace NAME."""
    if not NETNS_NAME.match(name):
        raise NetDeviceError(f"bad network namespace name {name!r}")
    try:
        return os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NetDeviceError(f"network namespace {name} does not exist "
                             f"(create it with: ip netns add {name})") from None
    except OSError as e:
        raise NetDeviceError(f"network namespace {name}: {e.strerror}") from None


def _setns(fd: int) -> None:
    if hasattr(os, "setns"):                              # Python 3.12
        os.setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def in_netns(name: str, fn):
    """fn() called in a thread that has entered the network namespace NAME
    (sockets and TAP queues it opens stay in NAME); its result or exception."""
    fd = netns_fd(name)
    out: dict = {}

    def run() -> None:
        try:
            try:
                _setns(fd)
            except OSError as e:
                raise NetDeviceError(f"cannot enter network namespace {name}: "
                                     f"{e.strerror}") from None
            out["value"] = fn()
        except BaseException as e:                        # handed to the caller
            out["error"] = e
    t = threading.Thread(target=run, name=f"netns-{name}", daemon=True)
    try:
        t.start()
        t.join()
    finally:
        os.close(fd)
    if "error" in out:
        raise out["error"]
    return out["value"]


def iproute(netns: str | None = None):
    """A pyroute2 IPRoute on pyxend's namespace, or on the named one."""
    from pyroute2 import IPRoute
    if netns is None:
        return IPRoute()
    sock = in_netns(netns, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                                                 NETLINK_ROUTE))
    return IPRoute(fileno=sock.detach())


def _tunsetiff(ifname: str) -> tuple[int, str]:
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        raise NetDeviceError(f"cannot open /dev/net/tun: {e.strerror}") from None
    ifr = struct.pack("16sH22x", ifname.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR |
                      IFF_MULTI_QUEUE)
    try:
        ifr = fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as e:
        os.close(fd)
        raise NetDeviceError(f"cannot create TAP device {ifname}: {e.strerror}") from None
    return fd, ifr[:16].rstrip(b"\0").decode()


def open_queue(ifname: str, netns: str | None = None) -> int:
    """One queue of the TAP device `ifname` (creating the device with the first),
    in pyxend's namespace or, for a device already moved there, in `netns`."""
    if netns is None:
        return _tunsetiff(ifname)[0]
    return in_netns(netns, lambda: _tunsetiff(ifname)[0])


def create_in_netns(ifname: str, netns: str) -> int:
    """Create the TAP device in pyxend's namespace under a name the kernel
    picks (so no existing device is joined), move it into `netns` and name it
    `ifname` there. Returns its first queue; closing every queue deletes it."""
    from pyroute2.netlink.exceptions import NetlinkError
    nsfd = netns_fd(netns)
    try:
        fd, tmp = _tunsetiff("pxvif%d")
        try:
            with iproute() as ip:
                found = ip.link_lookup(ifname=tmp)
                if not found:
                    raise NetDeviceError(f"{tmp} vanished")
                try:
                    ip.link("set", index=found[0], net_ns_fd=nsfd)
                except NetlinkError as e:
                    raise NetDeviceError(f"cannot move {tmp} into network namespace "
                                         f"{netns}: {e}") from None
            with iproute(netns) as ip:
                found = ip.link_lookup(ifname=tmp)
                if not found:
                    raise NetDeviceError(f"{tmp} vanished from network namespace {netns}")
                if tmp != ifname:
                    if ip.link_lookup(ifname=ifname):
                        raise NetDeviceError(f"network namespace {netns} already has a "
                                             f"device named {ifname}")
                    try:
                        ip.link("set", index=found[0], ifname=ifname)
                    except NetlinkError as e:
                        raise NetDeviceError(f"cannot rename {tmp} to {ifname} in network "
                                             f"namespace {netns}: {e}") from None
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(nsfd)
    return fd


def plug(ifname: str, bridge: str, mtu: int | None = None, netns: str | None = None) -> None:
    """Put `ifname` on `bridge` (created when it does not exist) and bring both
    up, in pyxend's namespace or in the named one."""
    from pyroute2.netlink.exceptions import NetlinkError
    where = f" in network namespace {netns}" if netns else ""
    with iproute(netns) as ip:
        tap = ip.link_lookup(ifname=ifname)
        if not tap:
            raise NetDeviceError(f"{ifname} vanished{where}")
        found = ip.link_lookup(ifname=bridge)
        if found:
            link = ip.get_links(found[0])[0]
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            if kind != "bridge":
                raise NetDeviceError(f"{bridge} exists{where} and is not a bridge "
                                     f"(it is a {kind or 'plain'} device)")
            br = found[0]
        else:
            try:
                ip.link("add", ifname=bridge, kind="bridge")
            except NetlinkError as e:
                raise NetDeviceError(f"cannot create bridge {bridge}{where}: {e}") from None
            br = ip.link_lookup(ifname=bridge)[0]
            ip.link("set", index=br, state="up")
        kw = {"mtu": mtu} if mtu else {}
        ip.link("set", index=tap[0], address=XEN_VIF_MAC, **kw)
        ip.link("set", index=tap[0], master=br, state="up")


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
