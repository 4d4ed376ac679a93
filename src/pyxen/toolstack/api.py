"""pyxend's API: the table of its requests.

Every request pyxend answers is one `Request` in REQUESTS: its name (the
"method" of a request line), its parameters with their types (checked by
apiparams.check_params before the handler runs), what it returns, a line of
documentation, and the Daemon method that handles it. The handler is called
with the request's `args` and then the parameters in the table's order
(defaults filled in). The daemon dispatches through this table, and the
protocol's documentation (daemon.__doc__, docs/commands.md) is generated
from it by describe().

Adding a request: an entry here and its handler in daemon.Daemon (named
api_<name> unless it is shared); tests/toolstack/test_api_table.py checks
that both sides agree. A PV device kind's requests (<verb>_attach,
_detach, _list) come from devkinds.DEVICE_KINDS.
"""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated

from .apiparams import DomId, DomRef, MaxLen, Param, Range, check_params, describe_type
from .devkinds import DEVICE_KINDS, device_params
from .domconfig import MAX_MEMORY_MIB, MAX_VCPUS

__all__ = ["Request", "REQUESTS", "describe"]

# xl trigger's names (libxl_trigger), in libxl's order
TRIGGERS = ("nmi", "reset", "init", "power", "sleep", "s3resume")
_PORT = Annotated[int, Range(1, (1 << 17) - 1)]
_KB = Annotated[int, Range(0, MAX_MEMORY_MIB * 1024)]
_XL_CONF = list[Annotated[str, MaxLen(4096)]]
_POOL = Annotated[str, MaxLen(256)]
_CPU = Annotated[int, Range(0, 4095)]


@dataclass(frozen=True)
class Request:
    name: str
    params: tuple[Param, ...]
    returns: str                 # the result, as the documentation shows it
    doc: str
    handler: str                 # the Daemon method that answers it
    args: tuple = ()             # given to the handler before the parameters
    stream: bool = False         # the handler takes the connection (console)
    fds: int = 0                 # descriptors it takes (SCM_RIGHTS): the handler's fds=

    def check(self, params) -> None:
        """ParamError unless `params` fits the request."""
        check_params(self.params, params, self.name)

    def arguments(self, params: dict) -> list:
        """The handler's arguments after `args`: each parameter in the table's
        order, its default when the request leaves it out."""
        return [params[p.name] if p.name in params else p.default for p in self.params]


def _r(name: str, params=(), returns: str = "null", doc: str = "", **kw) -> Request:
    return Request(name, tuple(params), returns, doc, kw.pop("handler", "api_" + name), **kw)


def _device_requests() -> list[Request]:
    out = []
    for kind in DEVICE_KINDS:
        params = device_params(kind)
        v = kind.verb
        out += [
            _r(f"{v}_attach", params[f"{v}_attach"], kind.attach_returns,
               f"xl {v}-attach: {kind.cli.attach_help}", handler="_device_attach",
               args=(kind,)),
            _r(f"{v}_detach", params[f"{v}_detach"], "null",
               f"xl {v}-detach: {kind.cli.detach_help} (force: without the guest)",
               handler="_device_detach", args=(kind,)),
            _r(f"{v}_list", params[f"{v}_list"], "[device rows]",
               f"xl {v}-list: {kind.cli.list_help}",
               handler="_device_list", args=(kind,)),
        ]
    return out


_TABLE = [
    _r("version", (), '{"api": 1, "pyxen": "..."}', "the API version and pyxen's"),
    _r("create", (Param("config", Annotated[str, MaxLen(1 << 20)]),
                  Param("path", str, "<config>"), Param("overrides", list[str], ()),
                  Param("paused", bool, False), Param("xl_conf", _XL_CONF, ())),
       '{"domid", "name", "warnings"}',
       "create a domain from the text of an xl.cfg (path: where it was read, for "
       "messages and relative paths; overrides: KEY=VALUE lines; xl_conf: the caller's "
       "xl.conf settings that fill in what the config leaves out, xlconf.XlConf.defaults())"),
    _r("config_update", (Param("dom", DomRef), Param("config", Annotated[str, MaxLen(1 << 20)]),
                         Param("path", str, "<config>"), Param("overrides", list[str], ()),
                         Param("xl_conf", _XL_CONF, ())),
       '{"domid", "name", "warnings"}',
       "xl config-update: the xl.cfg text (path and overrides as create's) becomes the "
       "config the domain is built from at its next restart"),
    _r("list", (Param("dom", DomRef | None, None),), "[domain info]",
       "the domains (or one), Domain-0 first"),
    _r("info", (), "{host and hypervisor figures}", "as xl info"),
    _r("destroy", (Param("dom", DomRef),), "null", "terminate a domain at once"),
    _r("pause", (Param("dom", DomRef),), "null", "pause a domain's vCPUs"),
    _r("unpause", (Param("dom", DomRef),), "null", "let a paused domain run"),
    _r("shutdown", (Param("dom", DomRef),), "domid",
       "ask a domain to power off: writes control/shutdown like xl"),
    _r("reboot", (Param("dom", DomRef),), "domid",
       "ask a domain to reboot: writes control/shutdown like xl"),
    _r("save", (Param("dom", DomRef), Param("path", Annotated[str, MaxLen(4096)]),
                Param("checkpoint", bool, False), Param("paused", bool, False),
                Param("config", Annotated[str, MaxLen(1 << 20)] | None, None),
                Param("config_path", Annotated[str, MaxLen(4096)], "<config>"),
                Param("xl_conf", _XL_CONF, ())),
       '{"domid", "name", "bytes"}',
       "xl save: suspend the domain and write it to the file whose descriptor (open for "
       "writing) comes with the request (docs/save-format.md; path names it in messages), "
       "then destroy it, or resume it with checkpoint (-c) or paused (-p, left paused); "
       "config: an xl.cfg text stored instead of the running config", fds=1),
    _r("restore", (Param("path", Annotated[str, MaxLen(4096)]),
                   Param("config", Annotated[str, MaxLen(1 << 20)] | None, None),
                   Param("config_path", Annotated[str, MaxLen(4096)], "<config>"),
                   Param("paused", bool, False), Param("xl_conf", _XL_CONF, ())),
       '{"domid", "name"}',
       "xl restore: a new domain from the save file whose descriptor (open for reading) "
       "comes with the request (path names it), with the saved config or the xl.cfg text "
       "given; a truncated or foreign file is refused and creates nothing", fds=1),
    _r("migrate", (Param("dom", DomRef),
                   Param("config", Annotated[str, MaxLen(1 << 20)] | None, None),
                   Param("config_path", Annotated[str, MaxLen(4096)], "<config>"),
                   Param("debug", bool, False), Param("live", bool, True),
                   Param("xl_conf", _XL_CONF, ())),
       '{"domid", "name", "rounds", "frames", "sent", "precopy_s", "downtime_s", "total_s", '
       '"live"}',
       "xl migrate: send the domain over the connection whose descriptor comes with the "
       "request (to `migrate_receive` on the target, through ssh or a relocation server): "
       "pre-copy rounds of dirty memory while it runs (live), a short stop-and-copy, then "
       "destroyed once the target runs it; resumed here if anything fails. debug: the "
       "target verifies the memory against checksums (xl's --debug)", fds=1),
    _r("migrate_receive", (Param("paused", bool, False),),
       '{"domid", "name"}',
       "xl migrate-receive: build the domain a migration stream brings on the descriptors "
       "that come with the request (read, then write: ssh's standard input and output, or "
       "one socket), left paused with paused (-p)", fds=2),
    _r("rename", (Param("dom", DomRef), Param("name", str)), "null",
       "give a domain a new name (domconfig.domain_name_problem's rules)"),
    _r("domid", (Param("name", Annotated[str, MaxLen(256)]),), "domid", "domain name to id"),
    _r("domname", (Param("domid", Annotated[int, Range(0, 0x7FEF)]),), "name",
       "domain id to name"),
    _r("uptime", (), '[{"name", "domid", "uptime"}]', "every domain's uptime, Domain-0 first"),
    _r("mem_set", (Param("dom", DomRef), Param("kb", _KB)), "null",
       "set a domain's memory target in KiB (memory/target), at most its maximum"),
    _r("mem_max", (Param("dom", DomRef), Param("kb", _KB)), "null",
       "set a domain's maximum memory in KiB (memory/static-max), at least its target"),
    _r("vcpu_set", (Param("dom", DomRef), Param("count", Annotated[int, Range(1, MAX_VCPUS)])),
       "null", "set the number of online vCPUs (cpu/N/availability)"),
    _r("vcpu_list", (Param("dom", DomRef | None, None),), "[vcpu info]",
       "the vCPUs of every running domain (or one)"),
    _r("vcpu_pin", (Param("dom", DomRef),
                    Param("vcpu", Annotated[int, Range(0, MAX_VCPUS - 1)] | str),
                    Param("cpus", list[Annotated[int, Range(0, 4095)]])), "null",
       "pin a vCPU (a number or \"all\") to host CPUs"),
    _r("sched_credit", (Param("dom", DomRef | None, None),
                        Param("weight", Annotated[int, Range(1, 65535)] | None, None),
                        Param("cap", Annotated[int, Range(0, 100 * 4096)] | None, None)),
       '[{"name", "domid", "weight", "cap"}]',
       "the credit scheduler's weight and cap of every domain (or one), set when given"),
    # cpupools (toolstack/cpupools.py); a pool is named by its name or id
    _r("cpupool_list", (Param("pool", _POOL | None, None),),
       '{"pools": [{"id", "name", "sched", "cpus", "n_dom"}], "free_cpus", "backend"}',
       "xl cpupool-list: the pools (or one), the free CPUs and how pools are enforced"),
    _r("cpupool_create", (Param("name", _POOL), Param("sched", _POOL, ""),
                          Param("cpus", list[_CPU] | None, None),
                          Param("nodes", list[Annotated[int, Range(0, 4095)]] | None, None),
                          Param("dryrun", bool, False)),
       '{"id", "name", "sched", "cpus"}',
       "xl cpupool-create: a pool of free CPUs (cpus, or the free CPUs of nodes); "
       "dryrun: only check"),
    _r("cpupool_destroy", (Param("pool", _POOL),), "null",
       "xl cpupool-destroy: not Pool-0, not a pool with domains; its CPUs become free"),
    _r("cpupool_rename", (Param("pool", _POOL), Param("name", _POOL)), "null",
       "xl cpupool-rename"),
    _r("cpupool_cpu_add", (Param("pool", _POOL), Param("cpus", list[_CPU])),
       '{"errors": [libxl line]}', "xl cpupool-cpu-add: free CPUs into the pool"),
    _r("cpupool_cpu_remove", (Param("pool", _POOL), Param("cpus", list[_CPU])),
       '{"errors": [libxl line]}',
       "xl cpupool-cpu-remove: CPUs out of the pool (free), never its last while it has domains"),
    _r("cpupool_migrate", (Param("dom", DomRef), Param("pool", _POOL)), "null",
       "xl cpupool-migrate: move a domain (its cgroup, its vCPUs' affinity) to a pool"),
    _r("cpupool_numa_split", (), '{"pools": [name]}',
       "xl cpupool-numa-split: a pool per NUMA node"),
    _r("top", (), '{"host": {...}, "domains": [...]}',
       "xentop's figures: the host's memory and CPUs; per domain its state, CPU time, "
       "memory now and its limit, vCPUs, and its vifs' and vbds' backend counters"),
    _r("dmesg", (Param("clear", bool, False),), "[line]",
       "pyxend's log and every running domain's hypervisor log (clear: empty them "
       "after reading, as xl dmesg -c)"),
    _r("sysrq", (Param("dom", DomRef), Param("key", Annotated[str, MaxLen(1)])), "null",
       "send a magic SysRq key to the guest: writes control/sysrq like xl"),
    _r("trigger", (Param("dom", DomRef), Param("trigger", Annotated[str, MaxLen(16)]),
                   Param("vcpu", Annotated[int, Range(0, 0xFFFFFFFF)], 0)), '{"errno": int}',
       "(xl trigger, button-press) nmi, reset, init, power, sleep or s3resume, as "
       "libxl_send_trigger: 0, or the errno it failed with (XEN_DOMCTL_sendtrigger's for "
       "a PV domain; QMP for an HVM one)"),
    _r("cd_insert", (Param("dom", DomRef), Param("vdev", Annotated[str, MaxLen(16)]),
                     Param("target", Annotated[str, MaxLen(4096)])), "null",
       "(xl cd-insert) a medium (a file, or a disk spec's format=...,target=...) in an HVM "
       "domain's emulated cdrom drive: QMP blockdev-change-medium"),
    _r("qemu_monitor_command", (Param("dom", DomRef), Param("command", Annotated[str, MaxLen(4096)])),
       "output", "(xl qemu-monitor-command) a QEMU monitor (HMP) command run by an HVM "
       "domain's QEMU (QMP human-monitor-command); its output"),
    _r("cd_eject", (Param("dom", DomRef), Param("vdev", Annotated[str, MaxLen(16)])), "null",
       "(xl cd-eject) take the medium out of an HVM domain's emulated cdrom drive"),
    _r("dump_core", (Param("dom", DomRef),), '{"domid", "name", "size"} + 1 fd',
       "(xl dump-core) a read-only descriptor of the domain's memory, which the "
       "caller writes out as a core file with its own permissions"),
    _r("log", (Param("lines", Annotated[int, Range(0, 100000)], 100),), "[line]",
       "the last lines of pyxend's log"),
    _r("evtchn_connect", (Param("from_dom", DomId), Param("from_port", _PORT),
                          Param("to_dom", DomId), Param("to_port", _PORT)),
       '{"remote_dom"} + 2 eventfds',
       "(domain processes) bind to another domain's unbound port: the reply carries "
       "one end of a pair of eventfds each way"),
    *_device_requests(),
    _r("console", (Param("dom", DomRef),), '{"domid", "name"}',
       "attach to the domain's console: after the reply the connection carries raw "
       "console bytes both ways", handler="_attach_console", stream=True),
]

#: every request, by name (read-only)
REQUESTS: MappingProxyType[str, Request] = MappingProxyType({r.name: r for r in _TABLE})
assert len(REQUESTS) == len(_TABLE), "a request is listed twice"


def _param(p: Param) -> str:
    # "\0": a space the lines are not broken at (a name stays with its type)
    if p.required:
        return f"{p.name}:\0{describe_type(p.type)}"
    d = p.default
    default = json.dumps(list(d) if isinstance(d, tuple) else d)
    return f"{p.name}?:\0{describe_type(p.type)} = {default}"


def describe() -> str:
    """The requests as the protocol's documentation lists them."""
    lines = []
    for r in REQUESTS.values():
        params = "{" + ", ".join(_param(p) for p in r.params) + "}" if r.params else ""
        lines.append(textwrap.fill(f"{r.name} {params}".rstrip() + f" -> {r.returns}", 90,
                                   initial_indent="  ", subsequent_indent="        ",
                                   break_on_hyphens=False).replace("\0", " "))
        lines.append(textwrap.fill(r.doc, 90, initial_indent="      ",
                                   subsequent_indent="      "))
    return "\n".join(lines)
