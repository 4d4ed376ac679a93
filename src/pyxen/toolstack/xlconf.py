"""xl.conf(5): the host-wide settings of the xl toolstack, as pyxen reads them.

The file is /etc/xen/xl.conf, or the one $PYXEN_XL_CONF names; its syntax
is xl.cfg's (toolstack/xlcfg.py parses it, so an error names FILE:LINE).
No file is no settings (xl's defaults). The CLI reads it for the commands
it matters to (create, config-update, list -l, network-attach) and hands
pyxend, with create and config-update, the settings that fill in a
domain's config (`XlConf.defaults()`).

Keys that apply to pyxen:

* ``vif.default.bridge`` (deprecated ``defaultbridge``): the bridge of a
  vif entry (vif=, network-attach) without ``bridge=``;
* ``vif.default.script`` (deprecated ``vifscript``): its ``script=``
  (pyxen only does what vif-bridge does, and says so of other scripts);
* ``vif.default.backend``: its ``backend=`` (only domain 0 serves here);
* ``max_maptrack_frames``: the default of xl.cfg's ``max_maptrack_frames``
  (at most 1024, Xen 4.17's limit);
* ``output_format``: "json" for list -l, create -n/-d and config-update -d;
  "sxp" is not supported (JSON is printed, with a warning);
* ``domid_policy="xen"`` and ``claim_mode=1`` are what pyxend does anyway.

The other keys xl knows are accepted with a note saying why pyxen has no
use for them (`NOTES`); unknown keys are warned about. xl's own messages
are kept where xl has them (the deprecations, an invalid output_format or
domid_policy).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .xlcfg import Config, Setting, parse, parse_c_integer

__all__ = ["DEFAULT_PATH", "ENV", "XlConf", "load", "from_text", "NOTES", "APPLIED"]

DEFAULT_PATH = "/etc/xen/xl.conf"
#: the environment variable naming another xl.conf (tests, other hosts' files)
ENV = "PYXEN_XL_CONF"
_INT_MAX = (1 << 31) - 1
#: Xen 4.17's gnttab_max_maptrack_frames (domconfig.MAX_MAPTRACK_FRAMES)
_MAX_MAPTRACK = 1024

#: the keys pyxen acts on
APPLIED = ("vif.default.bridge", "vif.default.script", "vif.default.backend",
           "max_maptrack_frames", "output_format", "defaultbridge", "vifscript",
           "domid_policy", "claim_mode")

#: xl's other keys, and why pyxen does not use them
NOTES = {
    "autoballoon": "the host is not ballooned: pyxend's memory limit (pyxend --mem-limit) "
                   "bounds what domains get",
    "run_hotplug_scripts": "pyxend plugs vifs into their bridges itself (no hotplug scripts, "
                           "no udev)",
    "lockfile": "pyxend serialises domain creation itself",
    "blkdev_start": "pyxen attaches no temporary block devices to the host",
    "max_grant_frames": "a pyxen domain's grant table may grow to 64 frames, Xen's default, "
                        "as xl.cfg's max_grant_frames is not applied either",
    "max_grant_version": "pyxen's grant tables offer versions 1 and 2, as Xen's default",
    "vif.default.gatewaydev": "only the vif-route and vif-nat scripts use it; pyxen puts vifs "
                              "on bridges",
    "remus.default.netbufscript": "pyxen has no Remus",
    "colo.default.proxyscript": "pyxen has no COLO",
    "vm.cpumask": "global affinity masks are not applied (vcpu-pin and cpus= are)",
    "vm.pv.cpumask": "global affinity masks are not applied (vcpu-pin and cpus= are)",
    "vm.hvm.cpumask": "pyxen has no HVM guests",
}

_DEPRECATED = {"vifscript": "vif.default.script", "defaultbridge": "vif.default.bridge"}
#: xl.conf key -> the vif spec key it gives a default to
_VIF_DEFAULTS = {"vif.default.bridge": "bridge", "vif.default.script": "script",
                 "vif.default.backend": "backend"}


@dataclass(frozen=True)
class XlConf:
    """What pyxen takes from an xl.conf, with the messages reading it gave."""
    path: str | None = None
    vif: dict = field(default_factory=dict)        # vif spec key -> default value
    max_maptrack_frames: int | None = None
    max_maptrack_line: int = 1                     # where the file sets it
    output_format: str = "json"
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def defaults(self) -> list[str]:
        """The settings that fill in a domain's config, as xl.conf lines (for
        pyxend's create and config_update requests)."""
        out = [f"{k} = {_quote(self.vif[v])}" for k, v in _VIF_DEFAULTS.items()
               if v in self.vif]
        if self.max_maptrack_frames is not None:
            out.append(f"max_maptrack_frames = {self.max_maptrack_frames}")
        return out

    @classmethod
    def from_defaults(cls, lines) -> "XlConf":
        """defaults()' lines back (pyxend's side); XlCfgError when one is
        not one of those settings."""
        text = "\n".join(lines) + "\n"
        for s in parse(text, "<xl.conf>").settings():
            if s.key not in _VIF_DEFAULTS and s.key != "max_maptrack_frames":
                raise s.error(f"'{s.key}' is not an xl.conf setting of a domain's config")
        return from_text(text, "<xl.conf>")

    def vif_spec(self, text: str) -> str:
        """A vif spec with xl.conf's defaults added for the keys it leaves out
        (or empty), as xl sets them before it reads the spec."""
        given = set()
        for token in text.split(","):
            key, eq, value = token.partition("=")
            if eq and value.strip():
                given.add(key.strip())
        extra = [f"{k}={v}" for k, v in self.vif.items() if k not in given]
        if not extra:
            return text
        return ", ".join(([text.strip().rstrip(",")] if text.strip().rstrip(",") else []) + extra)

    def apply(self, config: Config) -> None:
        """Fill in what a domain's parsed config leaves out: the default
        max_maptrack_frames and each vif entry's bridge/script/backend."""
        if self.max_maptrack_frames is not None and "max_maptrack_frames" not in config:
            config.set("max_maptrack_frames", self.max_maptrack_frames,
                       self.path or "<xl.conf>", self.max_maptrack_line)
        s = config.setting("vif")
        if self.vif and s is not None and isinstance(s.value, list):
            config.set("vif", [self.vif_spec(v) if isinstance(v, str) else v for v in s.value],
                       s.filename, s.line)


def _quote(v: str) -> str:
    return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _string(s: Setting, warnings: list) -> str | None:
    """A string setting as libxlu's get_string reads it: a number is its text,
    a list is warned about and ignored."""
    if isinstance(s.value, list):
        warnings.append(f"{s.location}: warning: parameter `{s.key}' is a list but should "
                        "be a single value")
        return None
    return str(s.value)


def from_text(text: str, filename: str) -> XlConf:
    """An xl.conf's contents; XlCfgError (FILE:LINE) for a syntax error or a
    value xl refuses."""
    cfg = parse(text, filename)
    warnings: list[str] = []
    notes: list[str] = []
    vif: dict = {}
    maptrack = None
    output_format = "json"
    # the deprecated names first: vif.default.* wins wherever it is, as in xl
    for s in sorted(cfg.settings(), key=lambda s: s.key not in _DEPRECATED):
        key = s.key
        if key in _DEPRECATED:
            warnings.append(f"the global config option {key} is deprecated, please switch "
                            f"to {_DEPRECATED[key]}")
            key = _DEPRECATED[key]
        if key in _VIF_DEFAULTS:
            v = _string(s, warnings)
            if v is not None:
                vif[_VIF_DEFAULTS[key]] = v
        elif key == "max_maptrack_frames":
            n = s.value if isinstance(s.value, int) else \
                parse_c_integer(s.value) if isinstance(s.value, str) else None
            if n is None or not 0 <= n <= _INT_MAX:
                raise s.error(f"max_maptrack_frames must be a number from 0 to {_INT_MAX}, "
                              f"got {s.value!r}")
            if n > _MAX_MAPTRACK:
                raise s.error(f"max_maptrack_frames = {n}: at most {_MAX_MAPTRACK} "
                              "(Xen 4.17's gnttab_max_maptrack_frames, which pyxen keeps)")
            maptrack = (n, s.line)
        elif key == "output_format":
            v = _string(s, warnings)
            if v == "sxp":
                warnings.append(f"{s.location}: warning: output_format \"sxp\" is not "
                                "supported by pyxen: JSON is printed")
            elif v is not None and v != "json":
                warnings.append(f"invalid default output format \"{v}\"")
            elif v == "json":
                output_format = v
        elif key == "domid_policy":
            v = _string(s, warnings)
            if v == "random":
                notes.append(f"{s.location}: note: domid_policy \"random\" is not used: "
                             "pyxend gives domain ids in sequence (as \"xen\")")
            elif v not in ("xen", None):
                warnings.append("invalid domid_policy option")
        elif key == "claim_mode":
            if s.value not in (1, "1"):
                notes.append(f"{s.location}: note: claim_mode is not used: pyxend always "
                             "reserves a new domain's memory under its limit (as claim_mode=1)")
        elif key in NOTES:
            notes.append(f"{s.location}: note: {key} is not used by pyxen: {NOTES[key]}")
        else:
            warnings.append(f"{s.location}: warning: unknown xl.conf setting '{key}' "
                            "(ignored)")
    return XlConf(path=filename, vif=vif,
                  max_maptrack_frames=maptrack[0] if maptrack else None,
                  max_maptrack_line=maptrack[1] if maptrack else 1,
                  output_format=output_format, warnings=tuple(warnings), notes=tuple(notes))


def load(path: str | None = None) -> XlConf:
    """$PYXEN_XL_CONF or /etc/xen/xl.conf (or `path`): no default file is
    no settings; a file that was named but cannot be read is a warning (xl's
    message) and no settings; XlCfgError for a syntax error."""
    named = path or os.environ.get(ENV)
    p = named or DEFAULT_PATH
    try:
        with open(p, "rb") as f:
            data = f.read()
    except OSError as e:
        if named is None and isinstance(e, FileNotFoundError):
            return XlConf()
        return XlConf(warnings=(f"Failed to read config file: {p}: {e.strerror}",))
    return from_text(data.decode("utf-8", errors="surrogateescape"), p)

