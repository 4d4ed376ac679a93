"""A domain's configuration as libxl's JSON (libxl_domain_config), the form
`xl create -n` / `-d` and `xl list -l` print, so that scripts written for
xl's output (jq '.[].config.b_info.max_memkb') read pyxen's too.

The field names and their order are libxl_types.idl's; which fields appear
follows libxl's generated JSON writer (gentypes.py): a scalar only when it
is not its type's default (an enum with an init_val, such as an
on_poweroff of "destroy", is left out when it has that value; a string
when set; a defbool when set), an array only when it is not empty, a
nested struct (sched_params, "type.pv", arch_arm, arch_x86) always, even
empty. Two forms:

* parsed (`create -n`): what xl's config parser fills in, before libxl's
  defaults;
* live (`list -l`): after libxl's defaults (libxl__*_setdefault) as a
  created domain's stored configuration shows them, with the domain's
  current memory target, online vCPUs and scheduler parameters.

As libxl 4.17 does, kernel, cmdline and ramdisk are b_info's own fields
(the old "type.pv" copies are deprecated and left empty).

dumps() writes JSON as libxl's yajl generator does in its beautify mode:
four-space indents, "key": value, and an empty object or array written
open ("{", a blank line, "}").
"""
from __future__ import annotations

import uuid as uuidlib

from .devspec import DevSpecError, parse_disk_spec, parse_vif_spec

__all__ = ["domain_config", "disk_json", "nic_json", "dumps", "ACTIONS"]

#: xl.cfg action -> libxl_action_on_shutdown's name
ACTIONS = {"destroy": "destroy", "restart": "restart", "rename-restart": "restart_rename",
           "preserve": "preserve", "coredump-destroy": "coredump_destroy",
           "coredump-restart": "coredump_restart", "soft-reset": "soft_reset"}

#: libxl's default for a live domain's NIC MTU (libxl__device_nic_setdefault)
_DEFAULT_MTU = 1500
_DEFAULT_SCRIPT = "/etc/xen/scripts/vif-bridge"     # libxl__device_nic_setdefault
_MAX_MAPTRACK_DEFAULT = 1024
_EVENT_CHANNELS_DEFAULT = 1023


def _disk(spec: str, live: bool) -> dict | None:
    try:
        return disk_json(parse_disk_spec(spec), live)
    except DevSpecError:
        return None


def disk_json(d, live: bool) -> dict:
    """libxl_device_disk of a parsed disk spec (devspec.DiskSpec)."""
    out: dict = {}
    if d.target is not None:
        out["pdev_path"] = d.target
    out["vdev"] = d.vdev
    backend = d.backendtype
    if backend is None and live:
        backend = "phy" if d.format == "raw" else "qdisk"
    if backend:
        out["backend"] = backend
    out["format"] = "empty" if d.target is None else d.format
    if d.script:
        out["script"] = d.script
    if d.is_cdrom:
        out["removable"] = 1
    if not d.readonly:
        out["readwrite"] = 1
    if d.is_cdrom:
        out["is_cdrom"] = 1
    if d.direct_io_safe:
        out["direct_io_safe"] = True
    if live or not d.discard:
        out["discard_enable"] = "True" if d.discard else "False"
    if live or d.specification:
        out["specification"] = d.specification or "xen"
    if live or not d.trusted:
        out["trusted"] = "True" if d.trusted else "False"
    return out


def _nic(spec: str, index: int, name: str, live: bool) -> dict | None:
    try:
        return nic_json(parse_vif_spec(spec, index, seed=name), live)
    except DevSpecError:
        return None


def nic_json(v, live: bool) -> dict:
    """libxl_device_nic of a parsed vif spec (devspec.VifSpec)."""
    out: dict = {"devid": v.devid}
    if v.mtu is not None or live:
        out["mtu"] = v.mtu or _DEFAULT_MTU
    if v.model:
        out["model"] = v.model
    if not v.mac_generated or live:
        out["mac"] = v.mac
    if v.ip:
        out["ip"] = " ".join(v.ip)
    out["bridge"] = v.bridge
    if v.vifname:
        out["ifname"] = v.vifname
    if v.script or live:
        out["script"] = v.script or _DEFAULT_SCRIPT
    if v.type != "vif" or live:
        out["nictype"] = "vif_ioemu" if v.type == "ioemu" else "vif"
    if v.rate_bytes_per_interval:
        out["rate_bytes_per_interval"] = v.rate_bytes_per_interval
        out["rate_interval_usecs"] = v.rate_interval_us
    if v.gatewaydev:
        out["gatewaydev"] = v.gatewaydev
    return out


def domain_config(cfg: dict, live: dict | None = None) -> dict:
    """libxl_domain_config of a domain from its configuration (DomainConfig.to_dict()).

    live: None for the parsed form (create -n); for a created domain its
    figures: "target_kb", "max_kb", "online" (the online vCPU ids), "weight",
    "cap", "disks" and "nics" (its devices now, as disk_json / nic_json
    give them, hot-plugged ones too); missing ones come from the
    configuration."""
    is_live = live is not None
    live = live or {}
    name = cfg["name"]
    c_info: dict = {"type": cfg.get("type") or "pv", "name": name,
                    "uuid": cfg.get("uuid") or str(uuidlib.uuid4())}
    if live.get("poolid"):              # the cpupool (toolstack/cpupools.py)
        c_info["poolid"] = int(live["poolid"])
    if cfg.get("pool") is not None:
        c_info["pool_name"] = str(cfg["pool"])
    c_info["run_hotplug_scripts"] = "True"
    if is_live:
        c_info["driver_domain"] = "False"
        c_info["xend_suspend_evtchn_compat"] = "False"

    vcpus = int(cfg.get("vcpus") or 1)
    max_vcpus = int(cfg.get("maxvcpus") or vcpus)
    online = live.get("online", list(range(vcpus)))
    b_info: dict = {"max_vcpus": max_vcpus, "avail_vcpus": sorted(online)}
    if is_live:
        b_info["numa_placement"] = "True"
    memory_kb = int(cfg.get("memory") or 32) * 1024
    b_info["max_memkb"] = int(live.get("max_kb", int(cfg.get("maxmem") or 0) * 1024
                                       or memory_kb))
    b_info["target_memkb"] = int(live.get("target_kb", memory_kb))
    if is_live:
        b_info["video_memkb"] = 0
        b_info["iommu_memkb"] = 0
    maptrack = cfg.get("max_maptrack_frames", _MAX_MAPTRACK_DEFAULT)
    if maptrack != _MAX_MAPTRACK_DEFAULT or is_live:
        b_info["max_maptrack_frames"] = maptrack
    sched: dict = {}
    if not is_live:                     # xl.cfg's cpu_weight= and cap=
        for key, field_ in (("cpu_weight", "weight"), ("cap", "cap")):
            if cfg.get(key) is not None:
                sched[field_] = int(cfg[key])
    if is_live:
        sched["sched"] = live.get("sched") or "credit"
        if live.get("weight") is not None:
            sched["weight"] = int(live["weight"])
        if live.get("cap") is not None:
            sched["cap"] = int(live["cap"])
    b_info["sched_params"] = sched
    if is_live:
        b_info["claim_mode"] = "False"
    evtchn = cfg.get("max_event_channels", _EVENT_CHANNELS_DEFAULT)
    if evtchn != _EVENT_CHANNELS_DEFAULT or is_live:
        b_info["event_channels"] = evtchn
    for key in ("kernel", "cmdline", "ramdisk"):
        if cfg.get(key):
            b_info[key] = cfg[key]
    pv: dict = {}
    if is_live:
        pv["slack_memkb"] = 0
        pv["e820_host"] = "False"
    if cfg.get("bootloader"):                  # libxl_types.idl: type.pv's own fields
        pv["bootloader"] = cfg["bootloader"]
        if cfg.get("bootloader_args"):
            pv["bootloader_args"] = list(cfg["bootloader_args"])
    hvm = cfg.get("hvm") if cfg.get("type") == "hvm" else None
    if hvm is not None:
        b_info["device_model_version"] = "qemu_xen"
        if hvm.get("device_model_args"):
            b_info["device_model_args_hvm"] = list(hvm["device_model_args"])
        # pyxen's own field: the accelerator QEMU runs the guest with (kvm or tcg)
        b_info["device_model_accel"] = hvm.get("accel") or "tcg"
        b_info["type.hvm"] = _hvm_json(hvm)
    else:
        b_info["type.pv"] = pv
    b_info["arch_arm"] = {}
    b_info["arch_x86"] = {"msr_relaxed": "False"} if is_live else {}

    out: dict = {"c_info": c_info, "b_info": b_info}
    if hvm is not None:              # emulated by QEMU: no PV backend lists them
        live = {k: v for k, v in live.items() if k not in ("disks", "nics")}
        cfg = dict(cfg, disk=hvm.get("disk") or [], vif=hvm.get("vif") or [])
    disks = live.get("disks")
    if disks is None:
        disks = [d for d in (_disk(s, is_live) for s in cfg.get("disk") or ()) if d is not None]
    if disks:
        out["disks"] = disks
    nics = live.get("nics")
    if nics is None:
        nics = [n for n in (_nic(s, i, name, is_live) for i, s in enumerate(cfg.get("vif") or ()))
                if n is not None]
    if nics:
        out["nics"] = nics
    for key, default in (("on_poweroff", "destroy"), ("on_reboot", "restart"),
                         ("on_watchdog", "destroy"), ("on_crash", "destroy"),
                         ("on_soft_reset", "soft-reset")):
        action = ACTIONS.get(cfg.get(key) or default, "destroy")
        if action != "destroy":
            out[key] = action
    return out


def _hvm_json(h: dict) -> dict:
    """libxl_domain_build_info's type.hvm fields pyxen's HVM settings
    (toolstack/hvm.py) give, in libxl_types.idl's order."""
    out: dict = {"acpi": str(bool(h.get("acpi", True)))}
    out["vga"] = {"kind": {"stdvga": "std", "cirrus": "cirrus", "none": "none"}
                  .get(h.get("vga", "cirrus"), "cirrus")}
    vnc: dict = {"enable": str(bool(h.get("vnc")))}
    if h.get("vnc"):
        vnc["listen"] = h.get("vnclisten") or "127.0.0.1"
        if h.get("vncpasswd"):
            vnc["passwd"] = h["vncpasswd"]
        if h.get("vncdisplay") is not None:
            vnc["display"] = h["vncdisplay"]
        vnc["findunused"] = str(bool(h.get("vncunused", True)))
    out["vnc"] = vnc
    out["sdl"] = {"enable": "False"}
    serial = h.get("serial") or []
    if serial:
        out["serial"] = serial[0]
    out["boot"] = h.get("boot") or "cd"
    if len(serial) > 1:
        out["serial_list"] = list(serial)
    return out


# --- yajl's beautified JSON ------------------------------------------------------------------
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
            "\t": "\\t"}


def _string(s: str) -> str:
    out = []
    for ch in s:
        e = _ESCAPES.get(ch)
        if e is None and ord(ch) < 0x20:
            e = "\\u%04X" % ord(ch)       # yajl writes the hex digits in upper case
        out.append(e or ch)
    return '"' + "".join(out) + '"'


def _value(v, depth: int) -> str:
    ind = "    "
    if isinstance(v, dict):
        items = [ind * (depth + 1) + _string(str(k)) + ": " + _value(x, depth + 1)
                 for k, x in v.items()]
        return "{\n" + ",\n".join(items) + "\n" + ind * depth + "}"
    if isinstance(v, (list, tuple)):
        items = [ind * (depth + 1) + _value(x, depth + 1) for x in v]
        return "[\n" + ",\n".join(items) + "\n" + ind * depth + "]"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return _string(str(v))


def dumps(obj) -> str:
    """obj as libxl's JSON writer prints it (yajl, beautify on), with the
    newline yajl ends a complete top-level value with."""
    return _value(obj, 0) + "\n"
