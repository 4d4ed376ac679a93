"""The kinds of PV device the toolstack manages, one entry each.

An entry names everything about its kind that the toolstack needs: the
XenStore device type (backend/<type>/<domid>/<devid>) and the nodes libxl
writes in both directories, the xl.cfg list that configures it (disk=,
vif=) and the parser of its entries (devspec), the backend class that
serves it (dom0/backends) and how one is made from a spec, how a device is
named on the command line, the parameters of its API requests
(<verb>_attach, <verb>_detach, <verb>_list) and its xl commands
(<verb>-attach, -detach, -list). domconfig.py (the config key and its
checks), devices.py (attach, resume, find, detach, describe), daemon.py
(the API requests, via api.py) and cli.py (the commands) loop over
DEVICE_KINDS.

Adding a kind touches three files: its spec parser in devspec.py, its
backend in dom0/backends, and an entry here.

This module imports neither the backends nor the daemon (the CLI reads it);
a backend class is named "module:Class" and imported when first needed.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable

from .apiparams import DomRef, Param
from ..dom0.backends import xenbus
from .devspec import parse_disk_spec, parse_vif_spec, resolve_target, vdev_to_devid


class DeviceConfigError(Exception):
    """A device cannot be attached or detached (the message says why)."""


@dataclass(frozen=True)
class CliVerbs:
    """The xl commands of a device kind: <verb>-attach, -detach, -list."""
    attach_help: str
    attach_description: str
    spec_metavar: str                  # the attach command's spec arguments
    spec_nargs: str                    # "+" or "*"
    attach_force_help: str | None      # attach has -f/--force (None: it has not)
    attach_sends_cwd: bool             # attach sends base_dir (relative targets)
    detach_help: str
    detach_description: str
    target_dest: str                   # detach's argument naming the device
    target_metavar: str | None
    target_help: str | None
    list_help: str
    list_header: str
    list_row: Callable[[dict], str]    # one row of <verb>_list's result, printed
    not_found: str                     # detach of a device it has not: xl's words, {which}


@dataclass(frozen=True)
class DeviceKind:
    type: str                          # XenStore device type: "vbd", "vif"
    noun: str                          # "disk", "vif": in messages
    config_key: str                    # the DomainConfig / xl.cfg list: disk=, vif=
    verb: str                          # API <verb>_attach, CLI <verb>-attach
    backend: str                       # "module:Class" of the backend
    # (text, index, seed, base_dir) -> spec: an entry of the config list or an
    # attach request's spec; index is its position (the next free devid when
    # attached at run time), seed names the domain (generated MACs), base_dir
    # is where relative paths start
    parse: Callable[[str, int, str, str], Any]
    # (backend nodes, devid) -> spec: the device again after pyxend restarted
    spec_from_backend: Callable[[dict, int], Any]
    attach_params: tuple[Param, ...]   # <verb>_attach's parameters after dom
    target_param: str                  # <verb>_detach's parameter naming the device
    attach_returns: str
    describe: Callable[[Any, Callable[[str], int]], dict]   # (dev, num) -> list columns
    label: Callable[[Any], str]              # dev -> "disk xvdb", "vif 0" (pyxend's log)
    attached: Callable[[Any, Any], str]      # (dev, spec) -> what pyxend's log says
    attach_result: Callable[[Any], dict]     # the <verb>_attach reply
    cli: CliVerbs
    # spec -> how messages name the device: "disk xvdb", "vif 0"
    name: Callable[[Any], str]
    # (backend class, xs, guest, spec, force) -> the backend, not started yet;
    # DeviceConfigError when what it serves cannot be had (the image, ...)
    make: Callable[..., Any]
    # (domid, spec, backend) -> (backend nodes, frontend nodes) as libxl writes them
    nodes: Callable[[int, Any, Any], tuple[dict, dict]]
    # (dev, which) -> whether the detach argument `which` names dev
    matches: Callable[[Any, str], bool]
    # (index, spec, earlier index, earlier spec) -> why a config may not list
    # both (the same devid)
    clash: Callable[[int, Any, int, Any], str]
    # spec -> what of the entry pyxen does not do (the config warns, naming the line)
    caveats: Callable[[Any], list[str]] = lambda spec: []

    def backend_class(self) -> type:
        module, _, name = self.backend.partition(":")
        return getattr(importlib.import_module(module), name)


# --- vbd: disk= / block-* ------------------------------------------------------------------------
def _parse_disk(text: str, index: int, seed: str, base_dir: str):
    spec = parse_disk_spec(text)
    return resolve_target(spec, base_dir) if base_dir else spec


def _disk_from_backend(n: dict, devid: int):
    return parse_disk_spec(f"vdev={n['dev']}, format={n.get('format', 'raw')}, "
                           f"access={'ro' if n.get('mode') == 'r' else 'rw'}, "
                           f"target={n['params']}")


def _make_disk(cls, xs, guest, spec, force: bool):
    from ..dom0.backends.image import ImageError, open_image
    if spec.target is None:
        raise DeviceConfigError(f"disk {spec.vdev}: empty cdrom drives are not supported")
    try:
        image = open_image(spec.target, spec.format, spec.access == "ro", force)
    except ImageError as e:
        raise DeviceConfigError(str(e)) from None
    try:
        return cls(xs, guest, spec.devid, image, vdev=spec.vdev, readonly=spec.access == "ro",
                   cdrom=spec.devtype == "cdrom", discard=spec.discard)
    except BaseException:
        image.close()
        raise


def _disk_nodes(domid: int, spec, dev) -> tuple[dict, dict]:
    be = {"frontend": xenbus.frontend_path("vbd", domid, spec.devid),
          "frontend-id": domid, "online": 1, "state": xenbus.INITIALISING,
          "removable": 0, "bootable": 1, "dev": spec.vdev,
          "type": "phy" if getattr(dev.image, "is_block", False) else "qdisk",
          "mode": "r" if spec.access == "ro" else "w",
          "device-type": spec.devtype, "params": spec.target or "", "format": spec.format,
          "discard-enable": int(spec.discard)}
    fe = {"backend": xenbus.backend_path("vbd", domid, spec.devid),
          "backend-id": 0, "state": xenbus.INITIALISING, "virtual-device": spec.devid,
          "device-type": spec.devtype}
    return be, fe


def _is_disk(dev, which: str) -> bool:
    if which in (dev.vdev, str(dev.devid)):
        return True
    try:
        return vdev_to_devid(which) == dev.devid
    except Exception:
        return False


def _disk_clash(i: int, d, j: int, other) -> str:
    same = "" if other.vdev == d.vdev else f" (same device as '{other.vdev}')"
    return f"disk entries {j} and {i} both use vdev '{d.vdev}'{same}, device number {d.devid}"


VBD = DeviceKind(
    type="vbd", noun="disk", config_key="disk", verb="block",
    backend="pyxen.dom0.backends.blkback:BlkBackend",
    parse=_parse_disk, spec_from_backend=_disk_from_backend,
    attach_params=(Param("spec", str), Param("force", bool, False),
                   Param("base_dir", str | None, None)),
    target_param="vdev",
    attach_returns='{"devid"}',
    describe=lambda dev, num: {"vdev": dev.vdev, "ring_ref": num("ring-ref")},
    label=lambda dev: f"disk {dev.vdev}",
    attached=lambda dev, spec: f"disk {spec.vdev} ({spec.target})",
    attach_result=lambda dev: {"devid": dev.devid},
    name=lambda spec: f"disk {spec.vdev}", make=_make_disk, nodes=_disk_nodes,
    matches=_is_disk, clash=_disk_clash,
    caveats=lambda spec: [f"script={spec.script} is not run: pyxen opens the target itself "
                          "(files, block devices, qemu-nbd for image formats)"]
    if spec.script else [],
    cli=CliVerbs(
        attach_help="attach a PV disk to a running domain",
        attach_description="Attach a disk to a running domain. The disk is given in "
        "xl-disk-configuration(5) syntax, in one or more pieces that are joined with commas "
        "(e.g. 'format=raw, vdev=xvdb, access=rw, target=/srv/data.img'). A relative target "
        "is taken from the current directory. An image already attached writable elsewhere "
        "is refused unless --force is given.",
        spec_metavar="DISK-SPEC", spec_nargs="+",
        attach_force_help="attach even if the image is in use writable elsewhere",
        attach_sends_cwd=True,
        detach_help="detach a PV disk from a running domain",
        detach_description="Ask the guest to let go of a disk and remove it (waits up to 10 s "
        "for the guest's frontend to close, as xl). -f removes it without waiting.",
        target_dest="vdev", target_metavar=None, target_help="xvdb, 51728, d1 ...",
        list_help="list a domain's PV disks (as xl block-list)",
        list_header="%-5s %-3s %-6s %-5s %-6s %-8s %-30s" % (
            "Vdev", "BE", "handle", "state", "evt-ch", "ring-ref", "BE-path"),
        list_row=lambda r: "%-5d %-3d %-6d %-5d %-6d %-8d %-30s" % (
            r["devid"], r["backend_id"], r["frontend_id"], r["state"], r["evtch"],
            r["ring_ref"], r["be_path"]),
        not_found="Error: Device {which} not connected."))


# --- vif: vif= / network-* ------------------------------------------------------------------------
def _parse_vif(text: str, index: int, seed: str, base_dir: str):
    return parse_vif_spec(text, index=index, seed=seed)


def _vif_from_backend(n: dict, devid: int):
    text = f"mac={n['mac']}, bridge={n['bridge']}"
    for key in ("rate", "vifname", "netns"):
        if n.get(key):
            text += f", {key}={n[key]}"
    return parse_vif_spec(text, index=devid)


def _vif_attached(dev, spec) -> str:
    where = f" in network namespace {dev.netns}" if dev.netns else ""
    return f"vif {dev.devid} ({dev.ifname} on {dev.bridge}{where})"


def _make_vif(cls, xs, guest, spec, force: bool):
    """(`force` is for disks: a vif has no image to share.)"""
    rate = None
    if spec.rate_bytes_per_interval:
        rate = (spec.rate_bytes_per_interval, spec.rate_interval_us)
    return cls(xs, guest, spec.devid, mac=spec.mac, bridge=spec.bridge, ifname=spec.vifname,
               mtu=spec.mtu, rate=rate, netns=spec.netns)


def _vif_nodes(domid: int, spec, dev) -> tuple[dict, dict]:
    be = {"frontend": xenbus.frontend_path("vif", domid, spec.devid),
          "frontend-id": domid, "online": 1, "state": xenbus.INITIALISING,
          "script": spec.script or "vif-bridge", "mac": spec.mac, "bridge": spec.bridge,
          "handle": spec.devid, "type": "vif"}
    if spec.ip:
        be["ip"] = " ".join(spec.ip)
    if spec.rate:
        be["rate"] = spec.rate
    if spec.vifname:
        be["vifname"] = spec.vifname
    if spec.netns:
        be["netns"] = spec.netns        # pyxen's own node: the bridge's namespace
    fe = {"backend": xenbus.backend_path("vif", domid, spec.devid), "backend-id": 0,
          "state": xenbus.INITIALISING, "handle": spec.devid, "mac": spec.mac}
    return be, fe


VIF = DeviceKind(
    type="vif", noun="vif", config_key="vif", verb="network",
    backend="pyxen.dom0.backends.netback:NetBackend",
    parse=_parse_vif, spec_from_backend=_vif_from_backend,
    attach_params=(Param("spec", str),),
    target_param="dev",
    attach_returns='{"devid", "mac"}',
    describe=lambda dev, num: {"mac": dev.mac, "tx_ring_ref": num("tx-ring-ref"),
                               "rx_ring_ref": num("rx-ring-ref"), "ifname": dev.ifname,
                               "bridge": dev.bridge, "netns": dev.netns},
    label=lambda dev: f"vif {dev.devid}",
    attached=_vif_attached,
    attach_result=lambda dev: {"devid": dev.devid, "mac": dev.mac},
    name=lambda spec: f"vif {spec.devid}", make=_make_vif, nodes=_vif_nodes,
    matches=lambda dev, which: which == str(dev.devid) or which.lower() == dev.mac,
    clash=lambda i, v, j, other: f"vif entries {j} and {i} both use devid {v.devid}",
    caveats=lambda spec: [f"script={spec.script} is not run: pyxen plugs vif{{domid}}."
                          f"{spec.devid} into bridge={spec.bridge} itself, as vif-bridge "
                          "does (no vif-route, vif-nat or custom scripts)"]
    if spec.script and spec.script.rsplit("/", 1)[-1] != "vif-bridge" else [],
    cli=CliVerbs(
        attach_help="attach a PV network interface",
        attach_description="Attach a network interface to a running domain, in "
        "xl-network-configuration(5) syntax (e.g. 'bridge=xenbr0, mac=00:16:3e:01:02:03'), "
        "the syntax of vif= entries in xl.cfg. The host side is a TAP device "
        "vif<domid>.<devid> (or vifname=) on the bridge, which is created when missing. "
        "A pyxen extension, here and in vif=, that xl does not have: netns=NAME, the bridge "
        "is in the named network namespace NAME (made beforehand with `ip netns add NAME`); "
        "the TAP device is created in pyxend's namespace, moved into NAME and put on the "
        "bridge there, e.g. 'bridge=xenbr0, netns=guests'.",
        spec_metavar="NET-SPEC", spec_nargs="*",
        attach_force_help=None, attach_sends_cwd=False,
        detach_help="detach a PV network interface",
        detach_description="Detach the interface given by index or MAC address.",
        target_dest="device", target_metavar="devid|mac", target_help=None,
        list_help="list a domain's PV network interfaces",
        list_header="%-3s %-2s %-17s %-6s %-5s %-6s %5s/%-5s %-30s" % (
            "Idx", "BE", "Mac Addr.", "handle", "state", "evt-ch", "tx-", "rx-ring-ref",
            "BE-path"),
        list_row=lambda r: "%-3d %-2d %s%6d %5d %6d %5d/%-11d %-30s" % (
            r["devid"], r["backend_id"], r["mac"], r["devid"], r["state"], r["evtch"],
            r["tx_ring_ref"], r["rx_ring_ref"], r["be_path"]),
        not_found="Unknown device {which}."))


#: every kind, in the order a domain's devices are attached (disks first)
DEVICE_KINDS: tuple[DeviceKind, ...] = (VBD, VIF)
BY_TYPE = MappingProxyType({k.type: k for k in DEVICE_KINDS})
BY_CONFIG_KEY = MappingProxyType({k.config_key: k for k in DEVICE_KINDS})


def device_params(kind: DeviceKind) -> dict[str, tuple[Param, ...]]:
    """The parameters of the kind's three API requests, by request name."""
    return {f"{kind.verb}_attach": (Param("dom", DomRef),) + kind.attach_params,
            f"{kind.verb}_detach": (Param("dom", DomRef), Param(kind.target_param, str),
                                    Param("force", bool, False)),
            f"{kind.verb}_list": (Param("dom", DomRef),)}
