"""What the hypervisor needs from dom0 for one domain, as an interface.

Every domU is born with two event channels to dom0 services (xenstored and
the console daemon) and may bind channels to other domains. The hypervisor
(`Domain`) only signals and asks through a `Dom0Link`; who serves the other
end is the builder's choice (toolstack/builder.py):

- `LocalServices`: xenstored, the console backend and the device backends
  in the same process (`pyxen create` without pyxend, and the tests);
- `PyxendLink` (toolstack/domproc.py): the channels cross to pyxend's
  process over eventfds.

The base class is a domain nobody serves: notifications go nowhere and
inter-domain channels answer -ESRCH, as Xen does for a domain that does
not exist.
"""
from __future__ import annotations

from .abi import ESRCH


class Dom0Link:
    def notify_store(self) -> None:
        """The guest signalled its xenstore channel."""

    def notify_console(self) -> None:
        """The guest signalled its console channel (also sent once more when
        the domain stops, so the last output is read)."""

    def domain_stopped(self) -> None:
        """The domain's vCPUs have stopped: read what its rings still hold."""
        self.notify_console()

    def console_tail(self, lines: int = 40) -> str:
        """The guest's last console lines, for a crash report ("" if unknown)."""
        return ""

    def connect_remote(self, remote_dom: int, remote_port: int, local_port: int):
        """EVTCHNOP_bind_interdomain to another domain: a RemoteEnd, or -errno."""
        return -ESRCH
