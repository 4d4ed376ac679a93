"""pyxen's ABI package (pyxen.hv.abi) against Xen's public headers in
/usr/include/xen (Debian's libxen-dev): a C program generated from the
ctypes definitions prints sizeof and offsetof of every field of every
structure and the value of every constant the headers define, and each
must equal pyxen's. Without the headers this fails: it is never skipped."""
from __future__ import annotations

import ctypes
import importlib
import os
import re
import subprocess

from pyxen.hv import abi

XEN_INCLUDE = "/usr/include/xen"
CFLAGS = ["-D__XEN_TOOLS__", "-D__XEN_INTERFACE_VERSION__=__XEN_LATEST_INTERFACE_VERSION__"]
MASK64 = (1 << 64) - 1

# constants no header defines under this name: pyxen's own, or errno values
# Xen keeps to itself (EINTR is __XEN__-only, EALREADY is not in errno.h)
PYXEN_OWN = {"NR_HYPERCALLS", "LEGACY_MAX_VCPUS", "INVALID_MFN", "GNTMAP_guest_avail0",
             "SRING_HEADER_SIZE", "EINTR", "EALREADY_"}


def modules():
    return [importlib.import_module(f"pyxen.hv.abi.{name}") for name in abi.MODULES]


def structures(mod):
    return [c for c in vars(mod).values()
            if isinstance(c, type) and issubclass(c, (ctypes.Structure, ctypes.Union))
            and c.__module__ == mod.__name__ and getattr(c, "_c_type_", "")]


def constants(mod):
    return {n: v for n, v in vars(mod).items()
            if re.fullmatch(r"[A-Z][A-Z0-9_a-z]*", n) and n[0] != "_" and n.upper()[:2] == n[:2]
            and isinstance(v, int) and not isinstance(v, bool)}


def c_name(mod, name):
    return getattr(mod, "_C_PREFIX", "") + name.rstrip("_")


def compile_and_run(tmp_path, body: str, includes: list[str]) -> str:
    assert os.path.isdir(XEN_INCLUDE), f"{XEN_INCLUDE} is missing: install libxen-dev"
    src = tmp_path / "abi.c"
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <stdint.h>\n"
                   + "".join(f"#include <{h}>\n" for h in includes)
                   + "int main(void){\n" + body + "return 0;}\n")
    exe = tmp_path / "abi"
    subprocess.run(["gcc", *CFLAGS, "-o", str(exe), str(src)], check=True)
    return subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout


def header_names(tmp_path, includes: list[str]) -> set[str]:
    """Every macro and every identifier (enum constants) the headers declare."""
    src = tmp_path / "names.c"
    src.write_text("".join(f"#include <{h}>\n" for h in includes))
    macros = subprocess.run(["gcc", *CFLAGS, "-E", "-dM", str(src)], check=True,
                            capture_output=True, text=True).stdout
    code = subprocess.run(["gcc", *CFLAGS, "-E", str(src)], check=True,
                          capture_output=True, text=True).stdout
    names = set(re.findall(r"^#define (\w+)", macros, re.M))
    return names | set(re.findall(r"\b[A-Za-z_]\w*\b", code))


def test_structures_and_constants_match_xen_headers(tmp_path):
    mods = modules()
    includes = sorted({m._HEADER for m in mods})
    lines, covered = [], set()
    for mod in mods:
        for cls in structures(mod):
            t = cls._c_type_
            key = f"{mod.__name__.rsplit('.', 1)[1]}.{cls.__name__}"
            size = getattr(cls, "_c_size_", f"sizeof({t})")
            lines.append(f'printf("S {key} %zu\\n", (size_t)({size}));\n')
            for fname, *_ in cls._fields_:
                if fname.startswith("_"):
                    continue
                cn = cls._c_names_.get(fname, fname)
                lines.append(f'printf("F {key} {fname} %zu %zu\\n", offsetof({t}, {cn}), '
                             f'sizeof((({t} *)0)->{cn}));\n')
            covered.add(cls)
    known = header_names(tmp_path, includes)
    checked, unchecked = {}, set()
    for mod in mods:
        for name, value in constants(mod).items():
            cn = c_name(mod, name)
            if cn in known:
                checked[(mod.__name__, name)] = value
                lines.append(f'printf("C {mod.__name__} {name} %llu\\n", '
                             f'(unsigned long long)({cn}));\n')
            else:
                unchecked.add(name)
    for nr, name in abi.HYPERCALLS.items():
        lines.append(f'printf("H {name} %d\\n", (int)__HYPERVISOR_{name});\n')

    out = compile_and_run(tmp_path, "".join(lines), includes)
    classes = {f"{m.__name__.rsplit('.', 1)[1]}.{c.__name__}": c for m in mods for c in structures(m)}
    seen, bad = set(), []
    for line in out.splitlines():
        kind, *rest = line.split()
        if kind == "S":
            key, size = rest
            seen.add(classes[key])
            if ctypes.sizeof(classes[key]) != int(size):
                bad.append(f"sizeof {key}: pyxen {ctypes.sizeof(classes[key])}, Xen {size}")
        elif kind == "F":
            key, fname, off, size = rest
            f = getattr(classes[key], fname)
            if (f.offset, f.size) != (int(off), int(size)):
                bad.append(f"{key}.{fname}: pyxen offset {f.offset} size {f.size}, "
                           f"Xen offset {off} size {size}")
        elif kind == "C":
            modname, name, value = rest
            if checked[(modname, name)] & MASK64 != int(value):
                bad.append(f"{modname}.{name}: pyxen {checked[(modname, name)]:#x}, "
                           f"Xen {int(value):#x}")
        elif kind == "H":
            name, nr = rest
            if getattr(abi.HC, name) != int(nr):
                bad.append(f"hypercall {name}: pyxen {getattr(abi.HC, name)}, Xen {nr}")
    assert not bad, "\n".join(bad)
    # every structure of the package was compared, and every constant was
    # either compared or is one of pyxen's own
    defined = {c for m in mods for c in vars(m).values()
               if isinstance(c, type) and issubclass(c, (ctypes.Structure, ctypes.Union))
               and c.__module__ == m.__name__}
    assert seen == covered == defined
    assert unchecked <= PYXEN_OWN, sorted(unchecked - PYXEN_OWN)
    assert len(checked) >= 250          # the header lookup did find them


def test_every_module_names_its_header():
    for mod in modules():
        assert os.path.exists(os.path.join("/usr/include", mod._HEADER)), mod._HEADER


def test_xenstore_error_names_are_xs_wires(tmp_path):
    """abi.XSD_ERRORS (what an XS_ERROR reply may name) is xs_wire.h's
    xsd_errors[] in its order."""
    out = compile_and_run(tmp_path,
                          "for (size_t i = 0; i < sizeof(xsd_errors) / sizeof(xsd_errors[0]); i++)"
                          ' printf("%s\\n", xsd_errors[i].errstring);\n',
                          ["errno.h", "xen/io/xs_wire.h"])
    assert tuple(out.split()) == abi.XSD_ERRORS
