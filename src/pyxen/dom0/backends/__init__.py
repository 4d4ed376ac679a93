"""Backends of Xen's split drivers, as domain 0 runs them: blkback (disks) and
netback (network), talking to a guest's blkfront / netfront over shared rings
in granted pages, with event channels for notification and the xenbus
protocol in XenStore to find each other.

`guest.GuestAccess` is what a backend needs of the guest (its memory, its
grant table, event channels); the toolstack supplies one per domain, from
the domain's own objects (a foreground domain) or from the memfds and the
control socket of a domain process (pyxend)."""
