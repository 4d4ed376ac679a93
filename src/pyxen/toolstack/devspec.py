"""Parsers for xl's device specification strings (``disk=`` and ``vif=``).

:func:`parse_disk_spec` reads one DISKSPEC as described in
xl-disk-configuration(5); :func:`parse_vif_spec` reads one vifspec as
described in xl-network-configuration(5).  Both return frozen dataclasses
and raise :class:`DevSpecError` with a message that quotes the whole spec
and names the offending part, e.g.::

    disk spec 'vdev=xvd!,target=/x': bad vdev 'xvd!'

Virtual device names are turned into Xen VBD numbers following
xen-vbd-interface(7) (:func:`vdev_to_devid`).

Where xl and its documentation differ, or where xl silently accepts
nonsense, these parsers follow the documentation or are stricter:

* whitespace is allowed around keys, ``=`` and values, not only before a
  parameter (xl's disk lexer only skips it before a parameter); only a
  ``target=`` value keeps trailing whitespace, as documented;
* a parameter given twice with two different non-empty values is an error
  (the manual: "each parameter may be specified at most once"); an empty
  value may be overridden, as the manual allows for ``target``;
* ``d<N>`` (without ``p<M>``) is accepted as a vdev, as the manual's table
  shows (libxl only takes ``d<N>p<M>``); ``xvd`` without a drive letter
  and partition numbers with signs or spaces are rejected;
* a vif ``rate`` interval without a unit is in microseconds as the manual
  says (xl's code reads it as seconds); prefixes ``k`` and ``K`` are both
  accepted; a rate that rounds down to 0 bytes per interval is an error;
* unknown vif keys are errors (xl prints a message and goes on).

One vif key is a pyxen extension that xl does not have: ``netns=NAME``, a
named network namespace (``ip netns add NAME``, /run/netns/NAME) in which
``bridge=`` lives; the vif's TAP device is moved into it and put on the
bridge there (empty or absent: pyxend's own namespace).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass

from ..dom0.backends.tap import NETNS_NAME

__all__ = [
    "DevSpecError",
    "DiskSpec",
    "VifSpec",
    "parse_disk_spec",
    "parse_vif_spec",
    "resolve_target",
    "vdev_to_devid",
    "parse_mac",
    "generate_mac",
    "parse_rate",
    "DISK_FORMATS",
    "DEFAULT_BRIDGE",
    "DEFAULT_RATE_INTERVAL_US",
    "XEN_OUI",
]


class DevSpecError(ValueError):
    """A malformed device specification string."""


# ---------------------------------------------------------------------------
# vdev -> Xen VBD device number (xen-vbd-interface(7))

#: Formats a disk image can have; "empty" is an empty cdrom drive.
DISK_FORMATS = ("raw", "qcow", "qcow2", "vhd", "qed", "empty")

_XVD_MAX_DISK = (1 << 20) - 1
_XVD_MAX_PART = 255
_INT_MAX = (1 << 31) - 1

_DP_RE = re.compile(r"d([0-9]+)(?:p([0-9]+))?\Z")
_DRIVE_RE = re.compile(r"(xvd|hd|sd)([a-z]+)([0-9]*)\Z")
_NUMBER_RE = re.compile(r"(?:0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\Z")


def _letters_to_index(letters: str) -> int:
    """'a' -> 0, 'z' -> 25, 'aa' -> 26, ... (bijective base 26)."""
    n = 0
    for ch in letters:
        n = n * 26 + (ord(ch) - ord("a") + 1)
    return n - 1


def _xvd_number(disk: int, part: int) -> int:
    if disk <= 15 and part <= 15:
        return (202 << 8) | (disk << 4) | part
    return (1 << 28) | (disk << 8) | part


def vdev_to_devid(vdev: str) -> int:
    """The Xen VBD number (xenstore device id) of a virtual device name.

    Accepts ``xvd<letters>[<partition>]``, ``d<disk>[p<partition>]``,
    ``hd<letter>[<partition>]``, ``sd<letter>[<partition>]`` and a plain
    number (decimal, ``0x`` hex or ``0`` octal), which is used as is.
    Raises :class:`DevSpecError` ("bad vdev '...'") otherwise.
    """
    bad = DevSpecError(f"bad vdev '{vdev}'")
    m = _DP_RE.match(vdev)
    if m:
        disk = int(m.group(1))
        part = int(m.group(2)) if m.group(2) is not None else 0
        if disk > _XVD_MAX_DISK or part > _XVD_MAX_PART:
            raise bad
        return _xvd_number(disk, part)
    if _NUMBER_RE.match(vdev):
        n = int(vdev, 16) if vdev[:2] in ("0x", "0X") else int(vdev, 8 if vdev.startswith("0") else 10)
        if n > _INT_MAX:
            raise bad
        return n
    m = _DRIVE_RE.match(vdev)
    if not m:
        raise bad
    scheme, letters, digits = m.groups()
    if digits.startswith("0"):  # no leading zeroes (and no partition "0")
        raise bad
    part = int(digits) if digits else 0
    # Bound the letters before converting so huge names stay cheap.
    if len(letters) > 5:
        raise bad
    disk = _letters_to_index(letters)
    if scheme == "xvd":
        if disk > _XVD_MAX_DISK or part > _XVD_MAX_PART:
            raise bad
        return _xvd_number(disk, part)
    if scheme == "hd":
        if disk > 3 or part > 63:
            raise bad
        return ((3 if disk < 2 else 22) << 8) | ((disk & 1) << 6) | part
    # sd
    if disk > 15 or part > 15:
        raise bad
    return (8 << 8) | (disk << 4) | part


# ---------------------------------------------------------------------------
# disk specs (xl-disk-configuration(5))

_ACCESS = {"": "rw", "rw": "rw", "w": "rw", "r": "ro", "ro": "ro"}
_BACKENDTYPES = ("phy", "tap", "qdisk", "standalone")
_SPECIFICATIONS = ("xen", "virtio")
_FLAGS = ("cdrom", "direct-io-safe", "discard", "no-discard", "colo", "no-colo",
          "trusted", "untrusted")
_STRING_KEYS = ("vdev", "backend", "script", "colo-host", "colo-export",
                "active-disk", "hidden-disk")
_ENUM_KEYS = ("format", "access", "devtype", "backendtype", "specification",
              "colo-port", "grant_usage")
#: Legacy "<prefix>:" forms (xend / xl 4.1).
_FORMAT_PREFIXES = ("raw", "qcow", "qcow2", "vhd")
_SCRIPT_PREFIXES = ("iscsi", "nbd", "enbd", "drbd")
_IGNORED_PREFIXES = ("tapdisk", "tap", "tap2", "aio", "ioemu", "file", "phy")

_KEY_RE = re.compile(r"[a-z][-a-z0-9_]*\Z")
_PREFIX_RE = re.compile(r"([a-z][a-z0-9]*):")
_TARGET_RE = re.compile(r"target[ \t\n]*=")
_WS = " \t\n"


@dataclass(frozen=True)
class DiskSpec:
    """One parsed DISKSPEC."""

    spec: str                       # the string as given
    target: str | None              # None: empty cdrom drive
    format: str                     # one of DISK_FORMATS
    vdev: str                       # as given (without a ":cdrom" suffix)
    devid: int                      # Xen VBD number of vdev
    access: str = "rw"              # "rw" or "ro"
    devtype: str = "disk"           # "disk" or "cdrom"
    backend: str = "0"              # backend domain name or id
    backendtype: str | None = None  # None (automatic), phy, tap, qdisk, standalone
    script: str | None = None       # block script (legacy iscsi: etc -> block-iscsi)
    direct_io_safe: bool = False
    discard: bool = True
    trusted: bool = True
    specification: str | None = None   # None (xen), "xen" or "virtio"
    grant_usage: bool | None = None     # None: backend default
    colo: bool = False
    colo_host: str | None = None
    colo_port: int | None = None
    colo_export: str | None = None
    active_disk: str | None = None
    hidden_disk: str | None = None

    @property
    def readonly(self) -> bool:
        return self.access == "ro"

    @property
    def is_cdrom(self) -> bool:
        return self.devtype == "cdrom"


class _DiskParser:
    def __init__(self, spec: str):
        self.spec = spec
        self.values: dict[str, str] = {}    # parameter -> value as given
        self.had_prefix = False              # a legacy prefix like "phy:"
        self.flags: dict[str, bool] = {}

    def error(self, detail: str) -> DevSpecError:
        return DevSpecError(f"disk spec '{self.spec}': {detail}")

    # -- storing parameters --------------------------------------------------
    def put(self, name: str, value: str) -> None:
        old = self.values.get(name)
        if old not in (None, "") and value != old:
            raise self.error(f"{name} respecified ('{old}', then '{value}')")
        if old is None or value != "":
            self.values[name] = value

    def is_set(self, name: str) -> bool:
        return name in self.values

    def positional(self, token: str) -> None:
        if not self.is_set("target"):
            self.put("target", token)
        elif not self.had_prefix and not self.is_set("format"):
            # ",hdc:cdrom,r": xend's empty cdrom drive
            if self.values["target"] == "" and ":" in token:
                self.vdev_with_devtype(token)
                self.put("format", "empty")
            else:
                self.put("format", token)
        elif not self.is_set("vdev"):
            if ":" in token:
                self.vdev_with_devtype(token)
            else:
                self.put("vdev", token)
        elif not self.is_set("access"):
            self.put("access", token)
        else:
            raise self.error(f"too many positional parameters at '{token}'")

    def vdev_with_devtype(self, token: str) -> None:
        vdev, _, devtype = token.rpartition(":")
        if devtype not in ("cdrom", "disk"):
            raise self.error(f"unknown device type '{devtype}' in '{token}' "
                             "(expected 'cdrom' or 'disk')")
        self.put("vdev", vdev)
        self.put("devtype", devtype)

    def flag(self, name: str) -> None:
        if name == "cdrom":
            self.put("devtype", "cdrom")
        elif name.startswith("no-"):
            self.flags[name[3:]] = False
        elif name == "untrusted":
            self.flags["trusted"] = False
        else:
            self.flags[name] = True

    def keyword(self, key: str, value: str) -> None:
        if key in _STRING_KEYS or key in _ENUM_KEYS:
            self.put(key, value)
        else:
            raise self.error(f"unknown parameter '{key}'")

    def legacy_prefix(self, prefix: str) -> None:
        self.had_prefix = True
        if prefix in _FORMAT_PREFIXES:
            self.put("format", prefix)
        elif prefix in _SCRIPT_PREFIXES:
            self.put("script", "block-" + prefix)
        elif prefix not in _IGNORED_PREFIXES:
            raise self.error(f"unknown disk prefix '{prefix}:'")

    # -- scanning -------------------------------------------------------------
    def scan(self) -> None:
        s = self.spec
        i, n = 0, len(s)
        while True:
            while i < n and s[i] in _WS:
                i += 1
            if i >= n:
                return
            m = _TARGET_RE.match(s, i)
            if m:
                # target= takes the whole rest of the spec (less one comma).
                value = s[m.end():].lstrip(_WS)
                if value.endswith(","):
                    value = value[:-1]
                self.put("target", value)
                return
            m = _PREFIX_RE.match(s, i)
            if m:
                after = s[m.end():m.end() + 1]
                known = m.group(1) in _FORMAT_PREFIXES + _SCRIPT_PREFIXES + _IGNORED_PREFIXES
                # "xvda:cdrom" is a vdev, not a prefix: an unknown word is
                # only a prefix when no letter or digit follows the colon.
                if known or not (after.isascii() and after.isalnum()):
                    self.legacy_prefix(m.group(1))
                    i = m.end()
                    continue
            j = s.find(",", i)
            if j < 0:
                j = n
            token = s[i:j]
            i = j + 1
            if "=" in token:
                key, _, value = token.partition("=")
                key = key.strip(_WS)
                if not _KEY_RE.match(key):
                    raise self.error(
                        f"bad parameter '{token.strip(_WS)}' (a target containing "
                        "'=' or ',' must be given last, as target=...)")
                self.keyword(key, value.strip(_WS))
            else:
                token = token.strip(_WS)
                if token in _FLAGS:
                    self.flag(token)
                else:
                    self.positional(token)
            if j >= n:
                return

    # -- the result ------------------------------------------------------------
    def build(self) -> DiskSpec:
        v = self.values
        fmt = v.get("format", "") or "raw"
        if fmt not in DISK_FORMATS:
            raise self.error(f"unknown format '{fmt}' (expected one of: {', '.join(DISK_FORMATS)})")
        access_raw = v.get("access", "")
        if access_raw not in _ACCESS:
            raise self.error(f"unknown access '{access_raw}' (expected r, ro, w or rw)")
        access = _ACCESS[access_raw]
        devtype = v.get("devtype", "") or "disk"
        if devtype not in ("disk", "cdrom"):
            raise self.error(f"unknown devtype '{devtype}' (expected 'cdrom' or 'disk')")
        backendtype = v.get("backendtype") or None
        if backendtype is not None and backendtype not in _BACKENDTYPES:
            raise self.error(f"unknown backendtype '{backendtype}' "
                             f"(expected one of: {', '.join(_BACKENDTYPES)})")
        specification = v.get("specification") or None
        if specification is not None and specification not in _SPECIFICATIONS:
            raise self.error(f"unknown specification '{specification}' (expected 'xen' or 'virtio')")
        grant_usage: bool | None = None
        if v.get("grant_usage"):
            if v["grant_usage"] not in ("0", "1"):
                raise self.error(f"bad grant_usage '{v['grant_usage']}' (expected 0 or 1)")
            grant_usage = v["grant_usage"] == "1"
        colo_port: int | None = None
        if v.get("colo-port"):
            text = v["colo-port"]
            if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
                raise self.error(f"bad colo-port '{text}'")
            colo_port = int(text)

        target: str | None = v.get("target")
        if devtype == "cdrom":
            access = "ro"
            if not target:
                target = None
                fmt = "empty"
        vdev = v.get("vdev", "")
        if not vdev:
            raise self.error("no vdev specified")
        if not target and devtype != "cdrom":
            raise self.error("no target specified (only a cdrom drive may be empty)")
        try:
            devid = vdev_to_devid(vdev)
        except DevSpecError as e:
            raise self.error(str(e)) from None

        return DiskSpec(
            spec=self.spec,
            target=target,
            format=fmt,
            vdev=vdev,
            devid=devid,
            access=access,
            devtype=devtype,
            backend=v.get("backend") or "0",
            backendtype=backendtype,
            script=v.get("script") or None,
            direct_io_safe=self.flags.get("direct-io-safe", False),
            discard=self.flags.get("discard", True),
            trusted=self.flags.get("trusted", True),
            specification=specification,
            grant_usage=grant_usage,
            colo=self.flags.get("colo", False),
            colo_host=v.get("colo-host") or None,
            colo_port=colo_port,
            colo_export=v.get("colo-export") or None,
            active_disk=v.get("active-disk") or None,
            hidden_disk=v.get("hidden-disk") or None,
        )


def parse_disk_spec(spec: str) -> DiskSpec:
    """Parse one DISKSPEC string (xl-disk-configuration(5)).

    Accepts the key=value form, the positional form
    ``target,format,vdev,access`` (any parameter may instead be named),
    flags (``cdrom``, ``discard``/``no-discard``, ``direct-io-safe``,
    ``trusted``/``untrusted``, ``colo``/``no-colo``) and the deprecated
    forms (``phy:/dev/vg/x,xvda,w``, ``tap:qcow2:/img,xvdb,w``,
    ``raw:/img,hdc:cdrom,ro``, ``,hdc:cdrom,r``).
    """
    if not isinstance(spec, str):
        raise DevSpecError(f"disk spec {spec!r}: must be a string")
    p = _DiskParser(spec)
    p.scan()
    return p.build()


def resolve_target(spec: DiskSpec, base: str) -> DiskSpec:
    """A relative disk target is taken relative to the config file (pyxend's
    working directory means nothing to the administrator)."""
    if spec.target and not os.path.isabs(spec.target) and not spec.target.startswith("/dev/"):
        return dataclasses.replace(spec, target=os.path.normpath(os.path.join(base, spec.target)))
    return spec


# ---------------------------------------------------------------------------
# vif specs (xl-network-configuration(5))

#: Xen's Organizationally Unique Identifier, for generated MAC addresses.
XEN_OUI = (0x00, 0x16, 0x3E)
DEFAULT_BRIDGE = "xenbr0"
#: Rate-limit credit replenishment interval when a rate gives none.
DEFAULT_RATE_INTERVAL_US = 50_000
_UINT32_MAX = (1 << 32) - 1
_UINT64_MAX = (1 << 64) - 1

_MAC_RE = re.compile(r"[0-9a-fA-F]{1,2}(?::[0-9a-fA-F]{1,2}){5}\Z")
_RATE_RE = re.compile(r"([0-9]+)([kKMG]?)([bB])/s\Z")
_INTERVAL_RE = re.compile(r"([0-9]+)(s|ms|us)?\Z")
_RATE_MULT = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9}
_INTERVAL_MULT = {None: 1, "us": 1, "ms": 1000, "s": 1_000_000}

_COLO_KEYS = frozenset(
    ["forwarddev"]
    + [f"colo_sock_{w}_{x}" for w in (
        "mirror", "compare_sec_in", "compare_pri_in", "compare_notify",
        "redirector0", "redirector1", "redirector2",
        "sec_redirector0", "sec_redirector1") for x in ("id", "ip", "port")]
    + ["colo_filter_mirror_queue", "colo_filter_mirror_outdev",
       "colo_filter_sec_rewriter0_queue"]
    + [f"colo_filter_{w}_{x}" for w in (
        "redirector0", "redirector1", "sec_redirector0", "sec_redirector1")
       for x in ("queue", "indev", "outdev")]
    + ["colo_compare_pri_in", "colo_compare_sec_in", "colo_compare_out",
       "colo_compare_notify_dev", "colo_checkpoint_host", "colo_checkpoint_port"]
)
_VIF_KEYS = frozenset({
    "mac", "bridge", "ip", "type", "model", "vifname", "script", "backend",
    "rate", "mtu", "gatewaydev", "netdev", "accel", "devid",
    "netns",                        # pyxen extension: the bridge's network namespace
}) | _COLO_KEYS



@dataclass(frozen=True)
class VifSpec:
    """One parsed vifspec."""

    spec: str                       # the string as given
    devid: int                      # default: the entry's index in vif=[...]
    mac: str                        # lower case, aa:bb:cc:dd:ee:ff
    mac_generated: bool = False     # True if mac was not given
    bridge: str = DEFAULT_BRIDGE
    ip: tuple[str, ...] = ()        # addresses as given (space-separated list)
    type: str = "vif"               # "vif" or "ioemu"
    model: str | None = None        # emulated NIC model (HVM only; ignored)
    vifname: str | None = None      # backend interface name
    script: str | None = None       # hotplug script
    backend: str = "0"              # backend domain name or id
    rate: str | None = None         # raw rate=, e.g. "10Mb/s@20ms"
    rate_bytes_per_interval: int | None = None
    rate_interval_us: int | None = None
    mtu: int | None = None          # None: 1500 or the bridge's
    gatewaydev: str | None = None
    accel: str | None = None        # accepted, not supported (xl ignores it too)
    netns: str | None = None        # pyxen extension: the bridge's namespace (None: pyxend's)
    colo: tuple[tuple[str, str], ...] = ()   # COLO settings, (key, value)


def parse_mac(text: str) -> str:
    """Normalise a MAC address ``a:b:c:d:e:f`` (hex) to ``aa:bb:...``."""
    if not _MAC_RE.match(text):
        raise DevSpecError(f"bad mac '{text}' (expected six hex bytes separated "
                           "by colons, e.g. 00:16:3e:12:34:56)")
    return ":".join(f"{int(x, 16):02x}" for x in text.split(":"))


def generate_mac(seed: str, index: int) -> str:
    """A MAC in Xen's OUI derived from ``seed`` and ``index``.

    Deterministic (same seed and index, same address).  Like libxl, the
    top bit of the fourth byte is cleared.
    """
    h = hashlib.sha256(f"pyxen-vif\0{seed}\0{index}".encode("utf-8", "surrogatepass")).digest()
    octets = XEN_OUI + (h[0] & 0x7F, h[1], h[2])
    return ":".join(f"{b:02x}" for b in octets)


def parse_rate(text: str) -> tuple[int, int]:
    """Parse ``RATE/s[@INTERVAL]``; returns (bytes_per_interval, interval_us).

    RATE is a positive decimal number with an optional k/K, M or G prefix
    (powers of 1000) and unit B (bytes) or b (bits), e.g. ``10Mb/s``,
    ``250KB/s``.  INTERVAL is a positive number with unit s, ms or us
    (no unit: microseconds); default 50ms.
    """
    rate, at, interval = text.partition("@")
    rate = rate.strip(_WS)
    if not rate:
        raise DevSpecError(f"bad rate '{text}': no rate given")
    m = _RATE_RE.match(rate)
    if not m:
        raise DevSpecError(f"bad rate '{text}' (expected e.g. 10Mb/s, 250KB/s or 1MB/s@20ms)")
    number = int(m.group(1))
    if number == 0:
        raise DevSpecError(f"bad rate '{text}': must be more than 0")
    if number > _UINT32_MAX:
        raise DevSpecError(f"bad rate '{text}': number too large")
    bytes_per_sec = number * _RATE_MULT[m.group(2)]
    if m.group(3) == "b":
        bytes_per_sec //= 8
    interval_us = DEFAULT_RATE_INTERVAL_US
    if at:
        interval = interval.strip(_WS)
        mi = _INTERVAL_RE.match(interval)
        if not mi:
            raise DevSpecError(f"bad rate '{text}': bad interval '{interval}' "
                               "(expected e.g. 20ms, 500us or 1s)")
        interval_us = int(mi.group(1)) * _INTERVAL_MULT[mi.group(2)]
        if interval_us == 0:
            raise DevSpecError(f"bad rate '{text}': interval must be more than 0")
        if interval_us > _UINT32_MAX:
            raise DevSpecError(f"bad rate '{text}': interval too long")
    per_interval = bytes_per_sec * interval_us // 1_000_000
    if per_interval == 0:
        raise DevSpecError(f"bad rate '{text}': less than one byte per interval")
    if per_interval > _UINT64_MAX:
        raise DevSpecError(f"bad rate '{text}': too large")
    return per_interval, interval_us


def _check_ifname(name: str) -> bool:
    # Linux dev_valid_name(): 1..15 bytes, not "." or "..", no '/', ':' or space.
    return (0 < len(name.encode("utf-8", "surrogatepass")) <= 15
            and name not in (".", "..")
            and not any(c in "/:" or c.isspace() for c in name))


def parse_vif_spec(spec: str, index: int = 0, seed: str = "") -> VifSpec:
    """Parse one vifspec (xl-network-configuration(5)).

    ``index`` is the entry's position in ``vif=[...]``: the default devid,
    and (with ``seed``) the input of the MAC address generated when none
    is given.  Keys are comma-separated ``key=value`` pairs; empty
    entries are skipped and a key given twice keeps its last value, as
    in xl.
    """
    if not isinstance(spec, str):
        raise DevSpecError(f"vif spec {spec!r}: must be a string")

    def error(detail: str) -> DevSpecError:
        return DevSpecError(f"vif spec '{spec}': {detail}")

    values: dict[str, str] = {}
    for token in spec.split(","):
        if not token.strip(_WS):
            continue
        key, eq, value = token.partition("=")
        key = key.strip(_WS)
        if not eq:
            raise error(f"'{key}' is not a key=value setting")
        if key not in _VIF_KEYS:
            raise error(f"unknown key '{key}'")
        if key == "netdev":  # deprecated alias
            key = "gatewaydev"
        values[key] = value.strip(_WS)

    def opt(key: str) -> str | None:
        return values.get(key) or None

    # mac
    mac_text = values.get("mac")
    mac_generated = False
    mac = None
    if mac_text:
        try:
            mac = parse_mac(mac_text)
        except DevSpecError as e:
            raise error(str(e)) from None
        if mac == "00:00:00:00:00:00":  # libxl: all-zero means "choose one"
            mac = None
    if mac is None:
        mac = generate_mac(seed, index)
        mac_generated = True

    # type
    nictype = values.get("type") or "vif"
    if nictype not in ("vif", "ioemu"):
        raise error(f"bad type '{nictype}' (expected 'vif' or 'ioemu')")

    # ip
    ips: tuple[str, ...] = ()
    if values.get("ip"):
        ips = tuple(values["ip"].split())
        for a in ips:
            try:
                ipaddress.ip_interface(a)
            except ValueError:
                raise error(f"bad ip '{a}'") from None

    # vifname
    vifname = opt("vifname")
    if vifname is not None and not _check_ifname(vifname):
        raise error(f"bad vifname '{vifname}' (1-15 characters, no '/', ':' or spaces)")

    # netns (pyxen extension)
    netns = opt("netns")
    if netns is not None and not NETNS_NAME.match(netns):
        raise error(f"bad netns '{netns}' (a network namespace name: 1-64 letters, digits, "
                    "'_', '-' or '.', not starting with '.' or '-')")

    # rate
    rate = opt("rate")
    per_interval = interval_us = None
    if "rate" in values:
        try:
            per_interval, interval_us = parse_rate(values["rate"])
        except DevSpecError as e:
            raise error(str(e)) from None

    # mtu
    mtu = None
    if values.get("mtu"):
        text = values["mtu"]
        if not text.isascii() or not text.isdigit() or not 68 <= int(text) <= 65535:
            raise error(f"bad mtu '{text}' (expected a number from 68 to 65535)")
        mtu = int(text)

    # devid
    devid = index
    if values.get("devid"):
        text = values["devid"]
        if not text.isascii() or not text.isdigit() or int(text) > _INT_MAX:
            raise error(f"bad devid '{text}' (expected a number)")
        devid = int(text)
    elif "devid" in values:
        raise error("bad devid '' (expected a number)")
    if devid < 0:
        raise error(f"bad index {index}")

    return VifSpec(
        spec=spec,
        devid=devid,
        mac=mac,
        mac_generated=mac_generated,
        bridge=opt("bridge") or DEFAULT_BRIDGE,
        ip=ips,
        type=nictype,
        model=opt("model"),
        vifname=vifname,
        script=opt("script"),
        backend=opt("backend") or "0",
        rate=rate,
        rate_bytes_per_interval=per_interval,
        rate_interval_us=interval_us,
        mtu=mtu,
        gatewaydev=opt("gatewaydev"),
        accel=opt("accel"),
        netns=netns,
        colo=tuple((k, v) for k, v in values.items() if k in _COLO_KEYS),
    )
