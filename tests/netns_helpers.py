"""Hermetic network tests: every test that makes network traffic does it in a
network namespace of its own (`ip netns add`, made here with pyroute2) that
holds the bridge, the host-side address and the guests' vifs (pyxen's vif
key netns=NAME), and the host's own namespace gets no bridge and no address.

The `netns` fixture makes them; each is deleted when the test ends, failed
or not (deleting a namespace deletes the bridges and addresses in it; TAP
devices pyxend moved there go with it). Names are unique per run
(pxt-<pid>-<n>-<random>), so parallel runs do not collide; namespaces left by
a run that was killed (its pid is gone) are swept when the next one starts.

Host-side traffic runs inside the namespace: sockets made in it
(pyroute2.netns.create_socket), netlink through IPRoute(netns=...), and
commands through `ip netns exec NAME ...`."""
from __future__ import annotations

import itertools
import os
import re
import secrets
import socket
import subprocess

import pytest

PREFIX = "pxt-"
_STALE = re.compile(rf"{PREFIX}(\d+)-\d+-[0-9a-f]+\Z")
_count = itertools.count()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale() -> list[str]:
    """Delete the namespaces of test runs whose process is gone."""
    from pyroute2 import netns
    gone = []
    for name in netns.listnetns():
        m = _STALE.match(name)
        if m and not _alive(int(m.group(1))):
            try:
                netns.remove(name)
                gone.append(name)
            except OSError:
                pass
    return gone


class Netns:
    """One named network namespace of this test run."""

    def __init__(self):
        from pyroute2 import netns
        self.name = f"{PREFIX}{os.getpid()}-{next(_count)}-{secrets.token_hex(3)}"
        netns.create(self.name)
        try:
            with self.ipr() as ip:
                ip.link("set", index=ip.link_lookup(ifname="lo")[0], state="up")
        except BaseException:
            self.delete()
            raise

    def ipr(self):
        """pyroute2 IPRoute on the namespace (never creates it)."""
        from pyroute2 import IPRoute
        return IPRoute(netns=self.name, flags=0)

    def socket(self, family=socket.AF_INET, type=socket.SOCK_DGRAM) -> socket.socket:
        """A socket that lives in the namespace."""
        from pyroute2 import netns
        return netns.create_socket(self.name, family, type, flags=0)

    def run(self, *cmd, **kw) -> subprocess.CompletedProcess:
        """A host command inside the namespace (ip netns exec)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(["ip", "netns", "exec", self.name, *map(str, cmd)], **kw)

    def bridge(self, name: str, address: str | None = None, prefixlen: int = 24) -> int:
        """A bridge in the namespace, up, with the host-side address; its index."""
        with self.ipr() as ip:
            ip.link("add", ifname=name, kind="bridge")
            idx = ip.link_lookup(ifname=name)[0]
            if address:
                ip.addr("add", index=idx, address=address, prefixlen=prefixlen)
            ip.link("set", index=idx, state="up")
        return idx

    def links(self) -> dict:
        """name -> link of every device in the namespace."""
        with self.ipr() as ip:
            return {link.get_attr("IFLA_IFNAME"): link for link in ip.get_links()}

    def delete(self) -> None:
        from pyroute2 import netns
        if self.name in netns.listnetns():
            netns.remove(self.name)


def host_links() -> set[str]:
    """The device names in the test process's own (the host's) namespace."""
    from pyroute2 import IPRoute
    with IPRoute() as ip:
        return {link.get_attr("IFLA_IFNAME") for link in ip.get_links()}


@pytest.fixture
def netns():
    """Factory: netns() -> a new Netns; every one is deleted at the end."""
    sweep_stale()
    made: list[Netns] = []

    def make() -> Netns:
        n = Netns()
        made.append(n)
        return n
    yield make
    errors = []
    for n in reversed(made):
        try:
            n.delete()
        except OSError as e:
            errors.append(f"{n.name}: {e}")
    assert not errors, f"could not delete network namespaces: {errors}"
