"""Domain configuration: a validated view of an xl.cfg file.

:class:`DomainConfig` holds the xl.cfg(5) keys pyxen acts on today, converted
from a parsed :class:`~pyxen.toolstack.xlcfg.Config`.  Every problem is an
:class:`~pyxen.toolstack.xlcfg.XlCfgError` pointing at the offending line
(``FILE:LINE: message``); keys pyxen does not act on are kept in
``unknown`` and reported in ``warnings``.

Defaults follow xl/libxl where they are documented or visible in the xl
sources (tools/xl/xl_parse.c, libxl's build-info defaults):

* ``type`` "pv" (the x86 default of xl);
* ``memory`` 32 MiB (libxl's default when ``memory=`` is absent),
  ``maxmem`` = ``memory``;
* ``vcpus`` 1, ``maxvcpus`` = ``vcpus``;
* ``on_poweroff`` destroy, ``on_reboot`` restart, ``on_watchdog`` destroy,
  ``on_crash`` destroy, ``on_soft_reset`` soft-reset;
* ``max_event_channels`` 1023 (libxl's default; 0 means the default too):
  the highest event-channel port the guest may allocate.
* ``max_maptrack_frames`` 1024 (Xen 4.17's gnttab_max_maptrack_frames;
  at most that, as Xen refuses more): the domain's own grant mappings, 256
  per frame.

Domain names (``name=``, ``pyxen rename``): see :func:`domain_name_problem`.

``disk`` and ``vif`` entries are kept as the raw strings but checked with
:mod:`pyxen.toolstack.devspec` (a bad entry, or two disks with the same
vdev, or two vifs with the same devid, is an error at the key's line).

Departures from xl: relative ``kernel``/``ramdisk`` paths are resolved
against the directory of the config file (xl uses its working directory);
overrides given on the command line still resolve against the working
directory.  ``type``/``builder`` values must be spelled out (xl accepts any
prefix, e.g. ``type="p"``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from .cpumap import CONFIG_NR_CPUS, CpumapError, vcpu_affinities
from .devkinds import BY_CONFIG_KEY, DEVICE_KINDS
from .devspec import DevSpecError, DiskSpec, VifSpec
from .hvm import HVM_KEYS, hvm_settings
from .xlcfg import (
    COMMAND_LINE,
    Config,
    Setting,
    Value,
    XlCfgError,
    apply_overrides,
    parse,
    parse_c_integer,
    parse_file,
)

__all__ = [
    "DomainConfig",
    "XlCfgError",
    "DEFAULT_MEMORY_MIB",
    "DEFAULT_MAX_EVENT_CHANNELS",
    "domain_name_problem",
    "SHUTDOWN_ACTIONS",
    "SOFT_RESET_ACTIONS",
    "SUPPORTED_KEYS",
    "UNSUPPORTED_KEYS",
]

#: libxl uses 32 MiB when a config has no ``memory=``.
DEFAULT_MEMORY_MIB = 32
#: Sanity bounds.
MAX_MEMORY_MIB = 1 << 20  # 1 TiB
MAX_VCPUS = 128  # Xen's HVM_MAX_VCPUS; plenty for pyxen guests
MAX_NAME_LEN = 64
#: Xen 4.17's gnttab_max_maptrack_frames: the default and the most a domain may ask.
MAX_MAPTRACK_FRAMES = 1024
#: libxl's default for max_event_channels (b_info->event_channels).
DEFAULT_MAX_EVENT_CHANNELS = 1023
#: Xen keeps max_evtchn_port within INT_MAX.
MAX_EVENT_CHANNELS = (1 << 31) - 1
#: Room in start_info.cmd_line (MAX_GUEST_CMDLINE) including the NUL.
MAX_CMDLINE_BYTES = 1024

#: Actions allowed for on_poweroff / on_reboot / on_watchdog / on_crash.
SHUTDOWN_ACTIONS = (
    "destroy",
    "restart",
    "rename-restart",
    "preserve",
    "coredump-destroy",
    "coredump-restart",
)
#: on_soft_reset additionally allows soft-reset (its default).
SOFT_RESET_ACTIONS = SHUTDOWN_ACTIONS + ("soft-reset",)

_ACTION_KEYS = {
    "on_poweroff": ("destroy", SHUTDOWN_ACTIONS),
    "on_reboot": ("restart", SHUTDOWN_ACTIONS),
    "on_watchdog": ("destroy", SHUTDOWN_ACTIONS),
    "on_crash": ("destroy", SHUTDOWN_ACTIONS),
    "on_soft_reset": ("soft-reset", SOFT_RESET_ACTIONS),
}

SUPPORTED_KEYS = frozenset({
    "name", "type", "builder", "kernel", "ramdisk", "cmdline", "root", "extra",
    "memory", "maxmem", "vcpus", "maxvcpus", "cpus", "cpus_soft", "uuid",
    *BY_CONFIG_KEY, "max_event_channels", *_ACTION_KEYS,
    "max_maptrack_frames", "bootloader", "bootloader_args",
    "pool", "cpu_weight", "cap",      # the cpupool and credit parameters (toolstack/cpupools.py)
})

#: Keys xl understands (xl.cfg(5), xl_parse.c) that pyxen does not act on
#: yet: they are accepted with a "not supported, ignored" warning.
UNSUPPORTED_KEYS = frozenset("""
    acpi acpi_firmware acpi_laptop_slate acpi_s3 acpi_s4 altp2m altp2mhvm apic
    bios bios_path_override boot channel
    cpuid device_model device_model_args device_model_args_hvm
    device_model_args_pv device_model_override device_model_stubdomain_override
    device_model_stubdomain_seclabel device_model_user device_model_version
    device_tree display dm_restrict driver_domain dtdev e820_host extratime
    firmware gfx_passthru gic_version hap hdtype hpet init_seclabel iomem
    ioports irqs keymap latency localtime max_grant_frames
    max_grant_version mca_caps mmio_hole ms_vm_genid
    msr_relaxed nestedhvm nographic nomigrate nx oos opengl p9 pae passthrough
    pci pci_msitranslate pci_permissive pci_power_mgmt pci_seize period
    pvcalls pvshim pvshim_cmdline pvshim_extra pvshim_path rdm rdm_mem_boundary
    rtc_timeoffset sdl seclabel serial shadow_memory slice smbios_firmware
    soundhw spice spice_clipboard_sharing spice_image_compression
    spice_streaming_video spiceagent_mouse spicedisable_ticketing spicehost
    spicepasswd spiceport spicetls_port spiceusbredirection spicevdagent stdvga
    stubdomain_cmdline stubdomain_kernel stubdomain_memory stubdomain_ramdisk
    tee timer_mode tsc_mode usb usbctrl usbdev usbdevice usbversion vdispl
    vendor_device vfb vga videoram viridian vkb vkb_device vmtrace_buf_kb vnc
    vncdisplay vnclisten vncpasswd vncunused vnuma vpmu vpt_align vsnd vtpm
    vuart xauthority xen_platform_pci xend_suspend_evtchn_compat
""".split())

_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")


def domain_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a domain, or None. libxl itself only wants
    names unique (and the toolstack, xl, finds a domain by name or id);
    pyxen also builds file names from them (console logs, core dumps), so
    a name is a non-empty string of at most 64 printable characters, with
    no '/', not "." or "..", and not all digits (it would read as an id).
    (pyxend also refuses "Domain-0": dom0 has it.)"""
    if not isinstance(name, str):
        return f"domain name must be a string, got {type(name).__name__}"
    if name == "":
        return "domain name must not be empty"
    if len(name) > MAX_NAME_LEN:
        return f"domain name is too long ({len(name)} characters, max {MAX_NAME_LEN})"
    if "/" in name:
        return f"domain name {_show(name)} must not contain '/'"
    if name in (".", ".."):
        return f"domain name {_show(name)} is not allowed"
    if any(not c.isprintable() for c in name):
        return f"domain name {_show(name)} must not contain control characters"
    if name.isascii() and name.isdigit():
        return (f"domain name {_show(name)} must not be all digits "
                "(it would look like a domain id)")
    return None


def _is_list(v: Value) -> bool:
    return isinstance(v, list)


def _show(v: Value) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


@dataclass
class DomainConfig:
    """The validated settings of one domain."""

    name: str
    type: str = "pv"
    kernel: str | None = None          # absolute path
    ramdisk: str | None = None         # absolute path
    cmdline: str = ""                  # effective kernel command line
    root: str | None = None            # raw root= (folded into cmdline)
    extra: str | None = None           # raw extra= (folded into cmdline)
    # bootloader= ("pygrub" or a program, toolstack/bootloader.py): kernel and
    # ramdisk then name files inside the guest's first disk, or are None
    bootloader: str | None = None
    bootloader_args: list[str] = field(default_factory=list)
    memory: int = DEFAULT_MEMORY_MIB   # MiB
    maxmem: int | None = None          # MiB; None -> memory
    vcpus: int = 1
    maxvcpus: int | None = None        # None -> vcpus
    cpus: str | list[str] | None = None       # hard affinity, raw
    cpus_soft: str | list[str] | None = None  # soft affinity, raw
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_watchdog: str = "destroy"
    on_crash: str = "destroy"
    on_soft_reset: str = "soft-reset"
    max_event_channels: int = DEFAULT_MAX_EVENT_CHANNELS
    max_maptrack_frames: int = MAX_MAPTRACK_FRAMES
    pool: str | None = None            # pool=: the cpupool, by name (or id)
    cpu_weight: int | None = None      # cpu_weight=: credit weight (1..65535)
    cap: int | None = None             # cap=: percent of one CPU (0 = none)
    uuid: str | None = None            # lower-case canonical form
    # each device kind's list (devkinds: disk=, vif=), raw spec strings
    devices: dict[str, list[str]] = field(default_factory=dict)
    # type="hvm": QEMU's settings and emulated disks/NICs (toolstack/hvm.py)
    hvm: dict | None = None
    unknown: dict[str, Value] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    source: str | None = None          # config file name, for messages
    locations: dict[str, str] = field(default_factory=dict)  # key -> "FILE:LINE"

    def __post_init__(self) -> None:
        self.devices = {k.config_key: list(self.devices.get(k.config_key, ()))
                        for k in DEVICE_KINDS}
        if self.maxmem is None:
            self.maxmem = self.memory
        if self.maxvcpus is None:
            self.maxvcpus = self.vcpus

    # ------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike[str], overrides: Iterable[str] = (),
                  *, check_files: bool = True, xl_conf=None) -> "DomainConfig":
        """Parse ``path``, apply ``key=value`` overrides and xl.conf's
        defaults (an xlconf.XlConf, if given), and validate."""
        config = parse_file(path)
        apply_overrides(config, overrides)
        if xl_conf is not None:
            xl_conf.apply(config)
        return cls.from_config(config, check_files=check_files)

    @classmethod
    def from_text(cls, text: str, path: str | None = None,
                  overrides: Iterable[str] = (), xl_conf=None) -> "DomainConfig":
        """A config file's contents (as a client sends them to pyxend):
        parsed with ``path`` as the name in messages, relative paths resolved
        against its directory (the working directory without a path),
        ``key=value`` overrides and xl.conf's defaults (xl_conf) applied,
        validated."""
        config = parse(text, path or "<config>")
        apply_overrides(config, overrides)
        if xl_conf is not None:
            xl_conf.apply(config)
        base = os.path.dirname(os.path.abspath(path)) if path else None
        return cls.from_config(config, base_dir=base)

    @classmethod
    def from_config(cls, config: Config, *, check_files: bool = True,
                    base_dir: str | None = None) -> "DomainConfig":
        """Validate ``config``.

        Relative kernel/ramdisk paths set in the file are resolved against
        ``base_dir`` (default: the config file's directory, or the working
        directory when the config did not come from a file); those set on
        the command line against the working directory.  With
        ``check_files`` false, the files are not required to exist.
        """
        return _Builder(config, check_files, base_dir).build()

    @classmethod
    def from_dict(cls, data: dict) -> "DomainConfig":
        """Rebuild a validated config from to_dict() output (unknown keys dropped)."""
        from dataclasses import fields
        names = {f.name for f in fields(cls)} - {"devices"}
        return cls(**{k: v for k, v in data.items() if k in names},
                   devices={k: data[k] for k in BY_CONFIG_KEY if k in data})

    # ------------------------------------------------------------------
    @property
    def disk(self) -> list[str]:
        """The ``disk`` entries (DISK_SPEC_STRINGs)."""
        return self.devices["disk"]

    @property
    def vif(self) -> list[str]:
        """The ``vif`` entries (NET_SPEC_STRINGs)."""
        return self.devices["vif"]

    def device_specs(self, config_key: str, seed: str | None = None) -> list:
        """One device list (``disk``, ``vif``...), parsed (it was validated
        when loaded); generated MACs derive from ``seed`` (default: the
        domain name) and each entry's index."""
        kind = BY_CONFIG_KEY[config_key]
        seed = self.name if seed is None else seed
        return [kind.parse(t, i, seed, "") for i, t in enumerate(self.devices[config_key])]

    def disk_specs(self) -> list[DiskSpec]:
        return self.device_specs("disk")

    def vif_specs(self, seed: str | None = None) -> list[VifSpec]:
        return self.device_specs("vif", seed)

    def location(self, key: str) -> str | None:
        """``"FILE:LINE"`` where ``key`` was set, if it came from a config."""
        return self.locations.get(key)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the configuration."""
        def copy(v: Any) -> Any:
            if isinstance(v, list):
                return [copy(x) for x in v]
            if isinstance(v, dict):
                return {k: copy(x) for k, x in v.items()}
            return v
        return {
            "name": self.name,
            "type": self.type,
            "uuid": self.uuid,
            "kernel": self.kernel,
            "ramdisk": self.ramdisk,
            "cmdline": self.cmdline,
            "root": self.root,
            "extra": self.extra,
            "bootloader": self.bootloader,
            "bootloader_args": list(self.bootloader_args),
            "memory": self.memory,
            "maxmem": self.maxmem,
            "vcpus": self.vcpus,
            "maxvcpus": self.maxvcpus,
            "cpus": copy(self.cpus),
            "cpus_soft": copy(self.cpus_soft),
            "on_poweroff": self.on_poweroff,
            "on_reboot": self.on_reboot,
            "on_watchdog": self.on_watchdog,
            "on_crash": self.on_crash,
            "on_soft_reset": self.on_soft_reset,
            "max_event_channels": self.max_event_channels,
            "max_maptrack_frames": self.max_maptrack_frames,
            "pool": self.pool,
            "cpu_weight": self.cpu_weight,
            "cap": self.cap,
            **{k: list(v) for k, v in self.devices.items()},
            "hvm": copy(self.hvm),
            "unknown": copy(self.unknown),
            "warnings": list(self.warnings),
            "source": self.source,
        }


class _Builder:
    """Turns a Config into a DomainConfig, one key at a time."""

    def __init__(self, config: Config, check_files: bool, base_dir: str | None):
        self.config = config
        self.check_files = check_files
        self.base_dir = base_dir
        self.warnings: list[str] = []

    # -- helpers -------------------------------------------------------------
    def setting(self, key: str) -> Setting | None:
        return self.config.setting(key)

    def missing(self, message: str) -> XlCfgError:
        # A required key that is absent has no line of its own: point at the
        # top of the file.
        return XlCfgError(self.config.filename, 1, message)

    def warn(self, s: Setting, message: str) -> None:
        self.warnings.append(f"{s.location}: warning: {message}")

    def string(self, key: str, *, allow_number: bool = False) -> str | None:
        s = self.setting(key)
        if s is None:
            return None
        v = s.value
        if isinstance(v, str):
            return v
        if isinstance(v, int) and allow_number:
            return str(v)
        if _is_list(v):
            raise s.error(f"'{key}' must be a single string, not a list")
        raise s.error(f"'{key}' must be a string (in quotes), got {_show(v)}")

    def integer(self, key: str, default: int | None, lo: int, hi: int, what: str) -> int | None:
        s = self.setting(key)
        if s is None:
            return default
        v = s.value
        if _is_list(v):
            raise s.error(f"'{key}' must be a single number ({what}), not a list")
        n = v if isinstance(v, int) else parse_c_integer(v)  # type: ignore[arg-type]
        if n is None:
            raise s.error(f"'{key}' must be a number ({what}), got {_show(v)}")
        if n < lo:
            raise s.error(f"'{key}' must be at least {lo} ({what}), got {n}")
        if n > hi:
            raise s.error(f"'{key}' must be at most {hi} ({what}), got {n}")
        return n

    def string_list(self, key: str) -> list[str]:
        s = self.setting(key)
        if s is None:
            return []
        v = s.value
        if not isinstance(v, list):
            raise s.error(f"'{key}' must be a list of strings, e.g. {key} = [ {_show(v)} ]")
        out = []
        for i, item in enumerate(v):
            if not isinstance(item, str):
                raise s.error(f"'{key}' entry {i} must be a string, got {_show(item)}")
            out.append(item)
        return out

    def cpu_spec(self, key: str) -> str | list[str] | None:
        s = self.setting(key)
        if s is None:
            return None
        v = s.value
        if isinstance(v, list):
            out = []
            for i, item in enumerate(v):
                if isinstance(item, list):
                    raise s.error(f"'{key}' entry {i} must be a CPU list string, not a list")
                out.append(str(item))
            return out
        return str(v)

    def path(self, key: str) -> str | None:
        s = self.setting(key)
        raw = self.string(key)
        if s is None or raw is None:
            return None
        if raw == "":
            raise s.error(f"'{key}' is empty")
        if os.path.isabs(raw):
            resolved = os.path.normpath(raw)
        else:
            resolved = os.path.normpath(os.path.join(self.base_for(s), raw))
        if self.check_files:
            try:
                exists = os.path.exists(resolved)
                is_file = os.path.isfile(resolved)
                readable = is_file and os.access(resolved, os.R_OK)
            except (OSError, ValueError) as e:
                raise s.error(f"{key} file '{raw}': {e}") from None
            if not exists:
                where = "" if raw == resolved else f" (looked for '{resolved}')"
                raise s.error(f"{key} file '{raw}' not found{where}")
            if not is_file:
                raise s.error(f"{key} file '{raw}' is not a regular file")
            if not readable:
                raise s.error(f"{key} file '{raw}' is not readable")
        return resolved

    def base_for(self, s: Setting) -> str:
        if s.filename == COMMAND_LINE:
            return os.getcwd()
        if self.base_dir is not None:
            return self.base_dir
        if self.config.path is not None:
            return os.path.dirname(os.path.abspath(self.config.path))
        return os.getcwd()

    # -- the conversion ------------------------------------------------------
    def build(self) -> DomainConfig:
        cfg = self.config

        # name
        name_s = self.setting("name")
        name = self.string("name")
        if name_s is None or name is None:
            raise self.missing("domain name must be specified (name = \"...\")")
        self.check_name(name_s, name)

        dtype = self.domain_type()

        # memory
        memory = self.integer("memory", DEFAULT_MEMORY_MIB, 1, MAX_MEMORY_MIB, "MiB")
        maxmem = self.integer("maxmem", memory, 1, MAX_MEMORY_MIB, "MiB")
        assert memory is not None and maxmem is not None
        if maxmem < memory:
            s = self.setting("maxmem")
            assert s is not None
            raise s.error(f"maxmem ({maxmem} MiB) must not be less than memory ({memory} MiB)")

        # vcpus
        vcpus = self.integer("vcpus", 1, 1, MAX_VCPUS, "count")
        maxvcpus = self.integer("maxvcpus", vcpus, 1, MAX_VCPUS, "count")
        assert vcpus is not None and maxvcpus is not None
        if maxvcpus < vcpus:
            s = self.setting("maxvcpus")
            assert s is not None
            raise s.error(f"maxvcpus ({maxvcpus}) must not be less than vcpus ({vcpus})")
        cpus = self.cpu_spec("cpus")
        cpus_soft = self.cpu_spec("cpus_soft")
        for key, spec in (("cpus", cpus), ("cpus_soft", cpus_soft)):
            if spec is not None:
                s = self.setting(key)
                try:
                    vcpu_affinities(spec, maxvcpus, CONFIG_NR_CPUS)
                except CpumapError as e:
                    raise s.error(f"{key}: {e}") from None
        if cpus_soft is not None:
            self.warn(self.setting("cpus_soft"), "soft affinity is not applied (a vCPU is a "
                      "Linux thread, which has only hard affinity)")

        # event channels (xl: 0 or absent means libxl's default)
        max_evtchn = self.integer("max_event_channels", DEFAULT_MAX_EVENT_CHANNELS, 0,
                                  MAX_EVENT_CHANNELS, "event channels")
        max_evtchn = max_evtchn or DEFAULT_MAX_EVENT_CHANNELS

        # grant maptrack frames (xl: 0..INT_MAX; Xen refuses more than its own limit)
        maptrack = self.integer("max_maptrack_frames", MAX_MAPTRACK_FRAMES, 0,
                                MAX_MAPTRACK_FRAMES, "grant maptrack frames")

        # shutdown actions
        actions = {key: self.action(key, default, allowed)
                   for key, (default, allowed) in _ACTION_KEYS.items()}

        # uuid
        uuid = self.string("uuid")
        if uuid is not None:
            if not _UUID_RE.match(uuid):
                s = self.setting("uuid")
                assert s is not None
                raise s.error(f"invalid uuid {_show(uuid)} (expected "
                              "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")
            uuid = uuid.lower()

        # kernel, ramdisk, command line (with a bootloader: paths inside the guest's disk)
        bootloader, bootloader_args = self.bootloader()
        if bootloader is not None:
            kernel, ramdisk = self.string("kernel"), self.string("ramdisk")
        else:
            kernel, ramdisk = self.path("kernel"), self.path("ramdisk")
        if kernel is None and bootloader is None and dtype != "hvm":
            hint = ""
            for k in ("firmware",):
                if k in cfg:
                    hint = f" ('{k}' is not supported)"
                    break
            raise self.missing("no kernel specified: pyxen boots PV guests from "
                               f"kernel = \"PATH\" (direct kernel boot) or "
                               f"bootloader = \"pygrub\"{hint}")
        cmdline, root, extra = self.command_line()

        devices = {k.config_key: self.device_list(k, name) for k in DEVICE_KINDS}
        # an HVM domain: QEMU's settings (its disks and NICs move there)
        hvm = hvm_settings(self, devices, name) if dtype == "hvm" else None

        # everything else
        unknown: dict[str, Value] = {}
        for s in cfg.settings():
            if s.key in SUPPORTED_KEYS or (hvm is not None and s.key in HVM_KEYS):
                continue
            unknown[s.key] = s.value
            if s.key in UNSUPPORTED_KEYS:
                self.warn(s, f"'{s.key}' is not supported by pyxen yet, ignored")
            else:
                self.warn(s, f"unknown key '{s.key}' ignored")

        return DomainConfig(
            name=name,
            type=dtype,
            kernel=kernel,
            ramdisk=ramdisk,
            cmdline=cmdline,
            root=root,
            extra=extra,
            bootloader=bootloader,
            bootloader_args=bootloader_args,
            memory=memory,
            maxmem=maxmem,
            vcpus=vcpus,
            maxvcpus=maxvcpus,
            cpus=cpus,
            cpus_soft=cpus_soft,
            max_event_channels=max_evtchn,
            max_maptrack_frames=maptrack,
            pool=self.string("pool", allow_number=True),
            cpu_weight=self.integer("cpu_weight", None, 1, 65535, "credit weight"),
            cap=self.integer("cap", None, 0, 100 * 4096, "percent of one CPU"),
            uuid=uuid,
            devices=devices,
            hvm=hvm,
            unknown=unknown,
            warnings=self.warnings,
            source=cfg.filename,
            locations={s.key: s.location for s in cfg.settings()},
            **actions,
        )

    def bootloader(self) -> tuple[str | None, list[str]]:
        """bootloader= and bootloader_args= (a list, or as xl also takes
        it, one string split at spaces)."""
        bl = self.string("bootloader")
        s = self.setting("bootloader_args")
        if s is not None and isinstance(s.value, str):
            args = s.value.split()
        else:
            args = self.string_list("bootloader_args")
        if bl == "":
            raise self.setting("bootloader").error("'bootloader' is empty")
        if bl is None and args:
            self.warn(s, "bootloader_args without bootloader: ignored")
        return bl, args

    def device_list(self, kind, name: str) -> list[str]:
        """A device kind's list (disk=, vif=...): each entry must parse
        (devkinds: its devspec parser) and no two may use the same devid."""
        specs = self.string_list(kind.config_key)
        s = self.setting(kind.config_key)
        seen: dict[int, tuple[int, Any]] = {}
        for i, text in enumerate(specs):
            try:
                d = kind.parse(text, i, name, "")
            except DevSpecError as e:
                raise s.error(f"{kind.config_key} entry {i}: {e}") from None
            if d.devid in seen:
                raise s.error(kind.clash(i, d, *seen[d.devid]))
            seen[d.devid] = (i, d)
            for caveat in kind.caveats(d):
                self.warn(s, f"{kind.config_key} entry {i}: {caveat}")
        return specs

    def check_name(self, s: Setting, name: str) -> None:
        problem = domain_name_problem(name)
        if problem:
            raise s.error(problem)

    def domain_type(self) -> str:
        type_s = self.setting("type")
        t = self.string("type")
        if t is not None:
            assert type_s is not None
            if t not in ("pv", "pvh", "hvm"):
                raise type_s.error(f"invalid domain type {_show(t)} (expected 'pv', 'pvh' or 'hvm')")
        builder_s = self.setting("builder")
        b = self.string("builder")
        if b is not None:
            assert builder_s is not None
            if b == "generic":
                bt = "pv"
            elif b == "hvm":
                bt = "hvm"
            else:
                raise builder_s.error(f"invalid builder {_show(b)} (expected 'generic' or 'hvm')")
            if t is not None and t != bt:
                raise builder_s.error(f"builder={b!r} contradicts type={t!r}")
            if t is None:
                t, type_s = bt, builder_s
        if t is None:
            return "pv"
        assert type_s is not None
        if t == "pvh":
            raise type_s.error(f"type '{t}' is not supported by pyxen yet (only 'pv')")
        return t

    def action(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        v = self.string(key)
        if v is None:
            return default
        if v not in allowed:
            s = self.setting(key)
            assert s is not None
            raise s.error(f"unknown {key} action {_show(v)} (expected one of: {', '.join(allowed)})")
        return v

    def command_line(self) -> tuple[str, str | None, str | None]:
        cmdline = self.string("cmdline", allow_number=True)
        root = self.string("root", allow_number=True)
        extra = self.string("extra", allow_number=True)
        if cmdline is not None:
            if root is not None or extra is not None:
                s = self.setting("cmdline")
                assert s is not None
                self.warn(s, "ignoring root= and extra= in favour of cmdline=")
            effective = cmdline
            where = self.setting("cmdline")
        else:
            if root is not None and extra is not None:
                effective = f"root={root} {extra}"
            elif root is not None:
                effective = f"root={root}"
            else:
                effective = extra or ""
            where = self.setting("extra") or self.setting("root")
        size = len(effective.encode("utf-8", errors="surrogatepass"))
        if size >= MAX_CMDLINE_BYTES and where is not None:
            raise where.error(f"kernel command line too long ({size} bytes, "
                              f"max {MAX_CMDLINE_BYTES - 1})")
        return effective, root, extra
