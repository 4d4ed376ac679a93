"""The XenStore nodes a toolstack writes for a new domain (as libxl does;
paths from Xen's docs/misc/xenstore-paths)."""
from __future__ import annotations


def write_domain_nodes(store, client, *, domid: int, name: str, uuid: str, vcpus: int,
                       target_kb: int, max_kb: int, created: float,
                       max_vcpus: int | None = None) -> None:
    """vcpus of the domain's max_vcpus (default: as many) start online:
    cpu/N/availability says which, as libxl writes it (the guest's CPU
    hotplug driver takes the others down and follows the node later)."""
    base = f"/local/domain/{domid}"
    store.mkdir(client, base)
    store.set_perms(client, base, ["n0", f"r{domid}"])
    for k, v in (("name", name), ("domid", str(domid)), ("vm", f"/vm/{uuid}"),
                 ("memory/static-max", str(max_kb)), ("memory/target", str(target_kb)),
                 ("console/type", "xenconsoled"), ("console/output", "pty"),
                 ("console/limit", "1048576")):
        store.write(client, f"{base}/{k}", v.encode())
    for i in range(max(vcpus, max_vcpus or 0)):
        store.write(client, f"{base}/cpu/{i}/availability",
                    b"online" if i < vcpus else b"offline")
    # what the guest itself may write: its control node, data and devices
    for k in ("control", "control/shutdown", "control/feature-poweroff",
              "control/feature-reboot", "data", "device", "drivers", "feature", "attr", "error"):
        p = f"{base}/{k}"
        store.write(client, p, b"")
        store.set_perms(client, p, [f"n{domid}"])
    for k, v in (("name", name), ("uuid", uuid), ("start_time", f"{created:.2f}")):
        store.write(client, f"/vm/{uuid}/{k}", v.encode())


def remove_domain_nodes(store, client, *, domid: int, uuid: str) -> None:
    for p in (f"/local/domain/{domid}", f"/vm/{uuid}"):
        try:
            store.rm(client, p)
        except Exception:
            pass
