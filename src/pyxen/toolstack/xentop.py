"""xentop's screen and batch output (`pyxen top`), from pyxend's `top` figures.

The columns, their widths and formats are xentop's (Xen 4.17
tools/xentop/xentop.c), so scripts that read `xentop -b` read `pyxen top -b`:

    NAME STATE CPU(sec) CPU(%) MEM(k) MEM(%) MAXMEM(k) MAXMEM(%) VCPUS NETS
    NETTX(k) NETRX(k) VBDS VBD_OO VBD_RD VBD_WR VBD_RSECT VBD_WSECT SSID

each right-aligned to its width and separated by one space; NETTX, NETRX,
VBD_RD, VBD_WR, VBD_RSECT and VBD_WSECT widen to fit their largest value
(xentop's adjust_field_widths); NAME is cut to 10 characters unless full
names are asked for. Domains are sorted by name, case-insensitively, as
xentop sorts by default. The STATE letters are xentop's, in its order:
d(ying) s(hutdown) b(locked) c(rashed) p(aused) r(unning). CPU(%) is the CPU
time used since the previous sample over the wall time between them (0.0 on
the first). The network figures are the host side's view of each vif, as
xentop reads them from the vifN.M interface: NETTX is what was sent to the
guest, NETRX what the guest sent. SSID is 0 (no XSM).

Nothing here keeps state between samples: the caller passes the previous
sample in.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

__all__ = ["Field", "FIELDS", "TopOptions", "cpu_percent", "table", "summary", "state_letters"]


@dataclass(frozen=True)
class Field:
    header: str
    width: int


#: xentop's fields[] in order: header and default width
FIELDS = (Field("NAME", 10), Field("STATE", 6), Field("CPU(sec)", 10), Field("CPU(%)", 6),
          Field("MEM(k)", 10), Field("MEM(%)", 6), Field("MAXMEM(k)", 10),
          Field("MAXMEM(%)", 9), Field("VCPUS", 5), Field("NETS", 4), Field("NETTX(k)", 8),
          Field("NETRX(k)", 8), Field("VBDS", 4), Field("VBD_OO", 8), Field("VBD_RD", 8),
          Field("VBD_WR", 8), Field("VBD_RSECT", 10), Field("VBD_WSECT", 10),
          Field("SSID", 4))

#: the columns that widen to fit their values (xentop's adjust_field_widths)
_WIDENING = ("NETTX(k)", "NETRX(k)", "VBD_RD", "VBD_WR", "VBD_RSECT", "VBD_WSECT")


@dataclass(frozen=True)
class TopOptions:
    full_name: bool = False          # -f
    vcpus: bool = False              # -v
    networks: bool = False           # -n
    vbds: bool = False               # -x
    repeat_header: bool = False      # -r


def state_letters(d: dict) -> str:
    """xentop's print_state: dying, shutdown (not crashed), blocked, crashed,
    paused, running, each its letter or '-'."""
    crashed = bool(d.get("shutdown")) and d.get("reason") == "crash"
    flags = (("d", d.get("dying")), ("s", d.get("shutdown") and not crashed),
             ("b", d.get("blocked")), ("c", crashed), ("p", d.get("paused")),
             ("r", d.get("running")))
    return "".join(ch if on else "-" for ch, on in flags)


def cpu_percent(d: dict, prev: dict | None, elapsed: float) -> float:
    """xentop's get_cpu_pct: the CPU seconds used since `prev` (the same
    domain's previous sample) over the seconds elapsed, in percent."""
    if prev is None or elapsed <= 0:
        return 0.0
    return (d["cpu_time"] - prev["cpu_time"]) * 100.0 / elapsed


def _vbd_total(d: dict, key: str) -> int | None:
    """xentop's tot_vbd_reqs: the sum over the domain's vbds, None when it has
    vbds but none with statistics (then '-' is printed)."""
    vbds = d.get("vbds") or []
    good = [v for v in vbds if not v.get("error")]
    if vbds and not good:
        return None
    return sum(v[key] for v in good)


def _net_total(d: dict, key: str) -> int:
    return sum(n[key] for n in d.get("nets") or [])


def _digits(n: int) -> int:
    """xentop's INT_FIELD_WIDTH (log10(n) + 1) for n >= 1."""
    return int(math.log10(n) + 1)


def _columns(d: dict, cpu_pct: float, total_kb: int) -> dict:
    """One domain's values, by header, before formatting."""
    return {"name": d["name"], "STATE": state_letters(d),
            "CPU(sec)": int(d["cpu_time"]), "CPU(%)": cpu_pct,
            "MEM(k)": d["mem_kb"], "MAXMEM(k)": d.get("max_kb"),
            "total_kb": total_kb, "VCPUS": d["vcpus"], "NETS": len(d.get("nets") or []),
            "NETTX(k)": _net_total(d, "tx_bytes") // 1024,
            "NETRX(k)": _net_total(d, "rx_bytes") // 1024,
            "VBDS": len(d.get("vbds") or []), "VBD_OO": _vbd_total(d, "oo_req"),
            "VBD_RD": _vbd_total(d, "rd_req"), "VBD_WR": _vbd_total(d, "wr_req"),
            "VBD_RSECT": _vbd_total(d, "rd_sect"), "VBD_WSECT": _vbd_total(d, "wr_sect"),
            "SSID": d.get("ssid", 0)}


def _widths(cols: list[dict], opts: TopOptions) -> dict:
    w = {f.header: f.width for f in FIELDS}
    for c in cols:
        if opts.full_name:
            w["NAME"] = max(w["NAME"], len(c["name"]))
        for h in _WIDENING:
            w[h] = max(w[h], _digits((c[h] or 0) + 1))
    return w


def _row(c: dict, w: dict, opts: TopOptions) -> str:
    def num(h):
        v = c[h]
        return "%*c" % (w[h], "-") if v is None else "%*d" % (w[h], v)
    name = "%*s" % (w["NAME"], c["name"]) if opts.full_name else "%10.10s" % c["name"]
    total = c["total_kb"] or 1
    maxkb = c["MAXMEM(k)"]
    cells = [name, c["STATE"], "%10d" % c["CPU(sec)"], "%6.1f" % c["CPU(%)"],
             "%10d" % c["MEM(k)"], "%6.1f" % (c["MEM(k)"] * 100.0 / total),
             "%10s" % "no limit" if maxkb is None else "%10d" % maxkb,
             "%9s" % "n/a" if maxkb is None else "%9.1f" % (maxkb * 100.0 / total),
             "%5d" % c["VCPUS"], "%4d" % c["NETS"], num("NETTX(k)"), num("NETRX(k)"),
             "%4d" % c["VBDS"], "%8c" % "-" if c["VBD_OO"] is None else "%8d" % c["VBD_OO"],
             num("VBD_RD"), num("VBD_WR"), num("VBD_RSECT"), num("VBD_WSECT"),
             "%4d" % c["SSID"]]
    return " ".join(cells)


def _header(w: dict) -> str:
    return " ".join("%*s" % (w[f.header], f.header) for f in FIELDS)


def _vcpu_lines(d: dict) -> list[str]:
    """xentop -v: the online vCPUs' seconds, five to a line."""
    out = "VCPUs(sec): "
    for v in d.get("vcpu_times") or []:
        if not v.get("online"):
            continue
        if v["id"] and v["id"] % 5 == 0:
            out += "\n        "
        out += " %2u: %10us" % (v["id"], int(v["cpu_time"]))
    return out.split("\n")


def _net_lines(d: dict) -> list[str]:
    return ["Net%d RX: %8dbytes %8dpkts %8derr %8ddrop  TX: %8dbytes %8dpkts %8derr %8ddrop"
            % (i, n["rx_bytes"], n["rx_packets"], n["rx_errs"], n["rx_drop"],
               n["tx_bytes"], n["tx_packets"], n["tx_errs"], n["tx_drop"])
            for i, n in enumerate(d.get("nets") or [])]


def _vbd_lines(d: dict) -> list[str]:
    out = []
    for v in d.get("vbds") or []:
        details = "[%2x:%2x] " % (os.major(v["devid"]), os.minor(v["devid"]))
        if v.get("error"):
            out.append("VBD BlkBack %4d %s OO: %8c   RD: %8c   WR: %8c   RSECT: %10c   "
                       "WSECT: %10c" % (v["devid"], details, "-", "-", "-", "-", "-"))
        else:
            out.append("VBD BlkBack %4d %s OO: %8d   RD: %8d   WR: %8d   RSECT: %10d   "
                       "WSECT: %10d" % (v["devid"], details, v["oo_req"], v["rd_req"],
                                        v["wr_req"], v["rd_sect"], v["wr_sect"]))
    return out


def table(sample: dict, prev: dict | None, opts: TopOptions = TopOptions()) -> list[str]:
    """The domain table of one sample (pyxend's `top` result with the
    monotonic time it was taken, "when"): a header, then per domain its row
    and the -v / -n / -x lines asked for. `prev` is the sample before (for
    CPU(%)), or None."""
    total_kb = sample["host"]["total_kb"]
    before = {d["domid"]: d for d in prev["domains"]} if prev else {}
    elapsed = sample["when"] - prev["when"] if prev else 0.0
    doms = sorted(sample["domains"], key=lambda d: d["name"].lower())
    cols = [_columns(d, cpu_percent(d, before.get(d["domid"]), elapsed), total_kb)
            for d in doms]
    w = _widths(cols, opts)
    lines = []
    for i, (d, c) in enumerate(zip(doms, cols)):
        if i == 0 or opts.repeat_header:
            lines.append(_header(w))
        lines.append(_row(c, w, opts))
        if opts.vcpus:
            lines += _vcpu_lines(d)
        if opts.networks:
            lines += _net_lines(d)
        if opts.vbds:
            lines += _vbd_lines(d)
    return lines


def summary(sample: dict, now: float | None = None) -> list[str]:
    """xentop's do_summary (the interactive screen's top lines)."""
    h = sample["host"]
    counts = dict.fromkeys(("run", "block", "pause", "shutdown", "crash", "dying"), 0)
    for d in sample["domains"]:
        crashed = bool(d.get("shutdown")) and d.get("reason") == "crash"
        if d.get("running"):
            counts["run"] += 1
        elif d.get("blocked"):
            counts["block"] += 1
        elif d.get("paused"):
            counts["pause"] += 1
        elif d.get("shutdown") and not crashed:
            counts["shutdown"] += 1
        elif crashed:
            counts["crash"] += 1
        elif d.get("dying"):
            counts["dying"] += 1
    t = time.strftime("%H:%M:%S", time.localtime(now))
    return [f"xentop - {t}   Xen {h['xen_version']}",
            "%u domains: %u running, %u blocked, %u paused, %u crashed, %u dying, "
            "%u shutdown " % (len(sample["domains"]), counts["run"], counts["block"],
                              counts["pause"], counts["crash"], counts["dying"],
                              counts["shutdown"]),
            "Mem: %dk total, %dk used, %dk free    CPUs: %u @ %dMHz"
            % (h["total_kb"], h["total_kb"] - h["free_kb"], h["free_kb"], h["nr_cpus"],
               h["cpu_mhz"])]
