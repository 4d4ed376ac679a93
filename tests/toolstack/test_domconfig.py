"""Tests for DomainConfig (pyxen.toolstack.domconfig)."""

import json
import os
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxen.toolstack.domconfig import (
    DEFAULT_MEMORY_MIB,
    SHUTDOWN_ACTIONS,
    DomainConfig,
)
from pyxen.toolstack.xlcfg import XlCfgError, apply_overrides, parse

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def guest(tmp_path):
    """A directory with a kernel and ramdisk file; returns a cfg writer."""
    (tmp_path / "vmlinuz").write_bytes(b"\x7fELF fake")
    (tmp_path / "initrd").write_bytes(b"070701")

    def write(body, name="dom.cfg", header='name = "dom"\nkernel = "vmlinuz"\n'):
        p = tmp_path / name
        p.write_text(header + body)
        return p

    write.dir = tmp_path
    return write


def load(path, overrides=(), **kw):
    return DomainConfig.from_file(path, overrides, **kw)


def load_err(path, overrides=(), **kw):
    with pytest.raises(XlCfgError) as info:
        load(path, overrides, **kw)
    return str(info.value)


def text_cfg(text, **kw):
    return DomainConfig.from_config(parse(text, "t.cfg"), check_files=False, **kw)


def text_err(text, **kw):
    with pytest.raises(XlCfgError) as info:
        text_cfg(text, **kw)
    return str(info.value)


# ---------------------------------------------------------------------------

class TestDefaults:
    def test_minimal(self, guest):
        d = load(guest(""))
        assert d.name == "dom"
        assert d.type == "pv"
        assert d.kernel == str(guest.dir / "vmlinuz")
        assert d.ramdisk is None
        assert d.cmdline == ""
        assert d.memory == DEFAULT_MEMORY_MIB == 32
        assert d.maxmem == d.memory
        assert d.vcpus == 1 and d.maxvcpus == 1
        assert d.cpus is None
        assert (d.on_poweroff, d.on_reboot, d.on_watchdog, d.on_crash, d.on_soft_reset) == \
            ("destroy", "restart", "destroy", "destroy", "soft-reset")
        assert d.uuid is None
        assert d.disk == [] and d.vif == []
        assert d.unknown == {} and d.warnings == []

    def test_dataclass_defaults(self):
        d = DomainConfig(name="x", memory=64, vcpus=2)
        assert d.maxmem == 64 and d.maxvcpus == 2


class TestFull:
    def test_all_supported_keys(self, guest):
        p = guest(
            'type = "pv"\n'
            'ramdisk = "initrd"\n'
            'memory = 0x100\n'
            'maxmem = 512\n'
            'vcpus = 2\n'
            'maxvcpus = 4\n'
            'cpus = "0-3,^1"\n'
            'cpus_soft = ["2", "3"]\n'
            'on_poweroff = "preserve"\n'
            'on_reboot = "rename-restart"\n'
            'on_watchdog = "coredump-destroy"\n'
            'on_crash = "coredump-restart"\n'
            'on_soft_reset = "destroy"\n'
            'uuid = "6A2B3F6E-1D2C-4A7B-9E3F-0123456789AB"\n'
            'disk = [ "format=raw, vdev=xvda, target=/tmp/x.img" ]\n'
            'vif = [ "bridge=br0", "" ]\n'
            'cmdline = "console=hvc0"\n'
        )
        d = load(p)
        assert d.ramdisk == str(guest.dir / "initrd")
        assert (d.memory, d.maxmem, d.vcpus, d.maxvcpus) == (256, 512, 2, 4)
        assert d.cpus == "0-3,^1" and d.cpus_soft == ["2", "3"]
        assert (d.on_poweroff, d.on_reboot, d.on_watchdog, d.on_crash, d.on_soft_reset) == \
            ("preserve", "rename-restart", "coredump-destroy", "coredump-restart", "destroy")
        assert d.uuid == "6a2b3f6e-1d2c-4a7b-9e3f-0123456789ab"
        assert d.disk == ["format=raw, vdev=xvda, target=/tmp/x.img"]
        assert d.vif == ["bridge=br0", ""]
        assert d.cmdline == "console=hvc0"
        assert d.warnings == [f"{p}:10: warning: soft affinity is not applied (a vCPU is a "
                              "Linux thread, which has only hard affinity)"]
        assert d.source == str(p)
        assert d.location("memory") == f"{p}:5"

    def test_to_dict_json(self, guest):
        d = load(guest('extra = "quiet"\nfoo = [1, ["x"]]\n'))
        data = d.to_dict()
        assert json.loads(json.dumps(data)) == data
        assert data["name"] == "dom" and data["cmdline"] == "quiet"
        assert data["unknown"] == {"foo": [1, ["x"]]}
        data["unknown"]["foo"][1].append("y")
        assert d.unknown == {"foo": [1, ["x"]]}

    def test_numbers_as_strings(self):
        d = text_cfg('name="a"\nkernel="k"\nmemory="64"\nvcpus=" 2"\nmaxmem="0x80"')
        assert (d.memory, d.vcpus, d.maxmem) == (64, 2, 128)

    def test_cpus_number(self):
        assert text_cfg('name="a"\nkernel="k"\ncpus=3').cpus == "3"

    def test_builder_generic(self):
        d = text_cfg('name="a"\nkernel="k"\nbuilder="generic"')
        assert d.type == "pv"
        assert text_cfg('name="a"\nkernel="k"\nbuilder="generic"\ntype="pv"').type == "pv"


class TestCmdline:
    @pytest.mark.parametrize("body,expected", [
        ('', ""),
        ('extra = "quiet"', "quiet"),
        ('root = "/dev/xvda1"', "root=/dev/xvda1"),
        ('root = "/dev/xvda1"\nextra = "ro quiet"', "root=/dev/xvda1 ro quiet"),
        ('cmdline = "console=hvc0"', "console=hvc0"),
        ('cmdline = ""', ""),
        ('extra = "a"\nextra += " b"', "a b"),
    ])
    def test_rule(self, body, expected):
        d = text_cfg('name="a"\nkernel="k"\n' + body)
        assert d.cmdline == expected
        assert d.warnings == []

    def test_cmdline_wins_with_warning(self):
        d = text_cfg('name="a"\nkernel="k"\nroot="/dev/x"\nextra="q"\ncmdline="c"')
        assert d.cmdline == "c"
        assert d.root == "/dev/x" and d.extra == "q"
        assert d.warnings == ["t.cfg:5: warning: ignoring root= and extra= in favour of cmdline="]

    def test_too_long(self):
        e = text_err('name="a"\nkernel="k"\n\nextra="' + "x" * 1024 + '"')
        assert e == "t.cfg:4: kernel command line too long (1024 bytes, max 1023)"


class TestPaths:
    def test_relative_to_config_dir(self, guest, monkeypatch, tmp_path_factory):
        p = guest("")
        monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
        assert load(p).kernel == str(guest.dir / "vmlinuz")

    def test_subdir_and_dotdot(self, guest):
        sub = guest.dir / "cfgs"
        sub.mkdir()
        p = sub / "d.cfg"
        p.write_text('name="d"\nkernel="../vmlinuz"\nramdisk="./../initrd"\n')
        d = load(p)
        assert d.kernel == str(guest.dir / "vmlinuz")
        assert d.ramdisk == str(guest.dir / "initrd")

    def test_absolute(self, guest):
        p = guest("", header=f'name="d"\nkernel="{guest.dir / "vmlinuz"}"\n')
        assert load(p).kernel == str(guest.dir / "vmlinuz")

    def test_override_relative_to_cwd(self, guest, monkeypatch):
        other = guest.dir / "other"
        other.mkdir()
        (other / "k2").write_bytes(b"x")
        p = guest("")
        monkeypatch.chdir(other)
        assert load(p, ['kernel="k2"']).kernel == str(other / "k2")

    def test_missing_kernel_file(self, guest):
        p = guest("", header='name = "dom"\n\nkernel = "nope.elf"\n')
        assert load_err(p) == f"{p}:3: kernel file 'nope.elf' not found (looked for '{guest.dir / 'nope.elf'}')"

    def test_missing_absolute_kernel_file(self, guest):
        p = guest("", header='name = "dom"\nkernel = "/nonexistent/k"\n')
        assert load_err(p) == f"{p}:2: kernel file '/nonexistent/k' not found"

    def test_missing_ramdisk_file(self, guest):
        p = guest('memory = 64\nramdisk = "initrd.gz"\n')
        assert load_err(p).startswith(f"{p}:4: ramdisk file 'initrd.gz' not found")

    def test_kernel_is_directory(self, guest):
        (guest.dir / "kdir").mkdir()
        p = guest("", header='name = "dom"\nkernel = "kdir"\n')
        assert load_err(p) == f"{p}:2: kernel file 'kdir' is not a regular file"

    def test_check_files_false(self, guest):
        p = guest("", header='name = "dom"\nkernel = "nope.elf"\n')
        assert load(p, check_files=False).kernel == str(guest.dir / "nope.elf")

    def test_no_kernel(self):
        assert text_err('name="a"\nmemory=64') == \
            "t.cfg:1: no kernel specified: pyxen boots PV guests from kernel = \"PATH\" " \
            "(direct kernel boot) or bootloader = \"pygrub\""

    def test_bootloader_without_kernel(self):
        d = text_cfg('name="a"\nbootloader="pygrub"\nbootloader_args=["--entry=1"]\n'
                     'extra="quiet"')
        assert (d.bootloader, d.bootloader_args, d.kernel, d.cmdline) == \
            ("pygrub", ["--entry=1"], None, "quiet")
        assert d.warnings == []
        assert DomainConfig.from_dict(d.to_dict()).bootloader_args == ["--entry=1"]

    def test_bootloader_kernel_is_inside_the_guest(self):
        # with a bootloader, kernel= and ramdisk= name files on the guest's disk
        d = text_cfg('name="a"\nbootloader="pygrub"\nkernel="/boot/vmlinuz"\n'
                     'ramdisk="/boot/initrd.img"\nbootloader_args="-q --entry=0"')
        assert (d.kernel, d.ramdisk, d.bootloader_args) == \
            ("/boot/vmlinuz", "/boot/initrd.img", ["-q", "--entry=0"])

    def test_bootloader_empty(self):
        assert text_err('name="a"\nbootloader=""') == "t.cfg:2: 'bootloader' is empty"

    def test_empty_kernel(self):
        assert text_err('name="a"\n\nkernel=""') == "t.cfg:3: 'kernel' is empty"

    def test_base_dir_for_text_config(self, tmp_path):
        (tmp_path / "k").write_bytes(b"x")
        d = DomainConfig.from_config(parse('name="a"\nkernel="k"'), base_dir=str(tmp_path))
        assert d.kernel == str(tmp_path / "k")


class TestErrors:
    @pytest.mark.parametrize("line, message", [
        ('cpus = "1-0"', 'cpus: Invalid pcpu range: 1-0.'),
        ('cpus = ["0", "^all"]', 'cpus: Can\'t combine "^" and "all".'),
        ('cpus = "all,^all"', 'cpus: Can\'t combine "^" and "all".'),
        ('cpus_soft = "x"', 'cpus_soft: Invalid pcpu range: x.'),
        ('cpus = "4096"', 'cpus: vcpu 0: its CPU map names no CPU (of 4096)'),
    ])
    def test_bad_cpu_maps_name_their_line(self, line, message):
        assert text_err('name="a"\nkernel="k"\n' + line) == f"t.cfg:3: {message}"

    def test_missing_name(self, guest):
        p = guest("memory = 64\n", header='kernel = "vmlinuz"\n')
        assert load_err(p) == f"{p}:1: domain name must be specified (name = \"...\")"

    @pytest.mark.parametrize("value,message", [
        ('""', "domain name must not be empty"),
        ('"a/b"', "domain name 'a/b' must not contain '/'"),
        ('"1234"', "domain name '1234' must not be all digits (it would look like a domain id)"),
        ('"' + "x" * 65 + '"', "domain name is too long (65 characters, max 64)"),
        ('"a\\tb"', "domain name 'a\\tb' must not contain control characters"),
        ('["a"]', "'name' must be a single string, not a list"),
    ])
    def test_bad_name(self, value, message):
        assert text_err(f'kernel="k"\n\nname = {value}') == f"t.cfg:3: {message}"

    def test_number_name_is_rejected_as_not_a_string(self):
        assert text_err('kernel="k"\nname = 1234') == "t.cfg:2: 'name' must be a string (in quotes), got 1234"

    def test_good_names(self):
        for n in ["a", "x" * 64, "dom-1.test_2", "1a", "wörld", "with space"]:
            assert text_cfg(f'kernel="k"\nname = "{n}"').name == n

    def test_hvm(self, guest):
        # HVM: QEMU's settings (toolstack/hvm.py); its disks move out of the PV devices
        p = guest('memory = 64\ntype = "hvm"\nserial = "pty"\n'
                  'disk = [ "format=raw, vdev=hdc, devtype=cdrom, target=" ]\n')
        d = load(p)
        assert d.type == "hvm" and d.hvm["serial"] == ["pty"] and d.hvm["accel"] in ("kvm", "tcg")
        assert d.disk == [] and len(d.hvm["disk"]) == 1 and d.warnings == []

    def test_hvm_needs_no_kernel(self):
        assert text_cfg('name="a"\ntype="hvm"\nboot="c"').kernel is None
        assert text_err('name="a"\ntype="hvm"\nboot="z"') == \
            "t.cfg:3: bad boot order 'z' (letters of a, c, d, n)"
        assert text_err('name="a"\ntype="hvm"\nvif=["model=e1001"]').startswith(
            "t.cfg:3: vif entry 0: unknown NIC model 'e1001'")

    def test_builder_hvm(self):
        assert text_cfg('name="a"\nkernel="k"\nbuilder = "hvm"').type == "hvm"

    def test_pvh(self):
        assert text_err('name="a"\n\ntype="pvh"') == "t.cfg:3: type 'pvh' is not supported by pyxen yet (only 'pv')"

    def test_bad_type(self):
        assert text_err('name="a"\ntype="xen"') == \
            "t.cfg:2: invalid domain type 'xen' (expected 'pv', 'pvh' or 'hvm')"
        assert text_err('name="a"\ntype=1').startswith("t.cfg:2: 'type' must be a string")

    def test_bad_builder(self):
        assert text_err('name="a"\nbuilder="linux"') == \
            "t.cfg:2: invalid builder 'linux' (expected 'generic' or 'hvm')"

    def test_builder_type_conflict(self):
        assert text_err('name="a"\ntype="pv"\nbuilder="hvm"') == "t.cfg:3: builder='hvm' contradicts type='pv'"

    def test_memory_not_a_number(self, guest):
        p = guest('\nmemory = "lots"\n')
        assert load_err(p) == f"{p}:4: 'memory' must be a number (MiB), got 'lots'"

    def test_memory_list(self):
        assert text_err('name="a"\nmemory=[1]') == "t.cfg:2: 'memory' must be a single number (MiB), not a list"

    def test_memory_bounds(self):
        assert text_err('name="a"\nmemory=0') == "t.cfg:2: 'memory' must be at least 1 (MiB), got 0"
        assert text_err('name="a"\nmemory="-5"') == "t.cfg:2: 'memory' must be at least 1 (MiB), got -5"
        assert "must be at most" in text_err('name="a"\nmemory=0x1000000000')

    def test_maxmem_less_than_memory(self, guest):
        p = guest("memory = 256\nmaxmem = 128\n")
        assert load_err(p) == f"{p}:4: maxmem (128 MiB) must not be less than memory (256 MiB)"

    def test_maxmem_less_than_default_memory(self):
        assert text_err('name="a"\nmaxmem=16').startswith("t.cfg:2: maxmem (16 MiB) must not be less")

    def test_vcpus(self):
        assert text_err('name="a"\nvcpus=0') == "t.cfg:2: 'vcpus' must be at least 1 (count), got 0"
        assert text_err('name="a"\nvcpus="two"') == "t.cfg:2: 'vcpus' must be a number (count), got 'two'"
        assert text_err('name="a"\nvcpus=4\nmaxvcpus=2') == "t.cfg:3: maxvcpus (2) must not be less than vcpus (4)"
        assert "at most 128" in text_err('name="a"\nvcpus=129')

    @pytest.mark.parametrize("key", ["on_poweroff", "on_reboot", "on_watchdog", "on_crash"])
    def test_unknown_action(self, key):
        e = text_err(f'name="a"\nkernel="k"\n{key} = "explode"')
        assert e == (f"t.cfg:3: unknown {key} action 'explode' (expected one of: "
                     + ", ".join(SHUTDOWN_ACTIONS) + ")")

    def test_soft_reset_only_for_on_soft_reset(self):
        assert text_err('name="a"\non_poweroff="soft-reset"').startswith(
            "t.cfg:2: unknown on_poweroff action 'soft-reset'")
        assert text_cfg('name="a"\nkernel="k"\non_soft_reset="soft-reset"').on_soft_reset == "soft-reset"

    def test_action_must_be_string(self):
        assert text_err('name="a"\non_crash=["destroy"]') == "t.cfg:2: 'on_crash' must be a single string, not a list"

    def test_bad_uuid(self):
        assert text_err('name="a"\nkernel="k"\nuuid="1234"') == \
            "t.cfg:3: invalid uuid '1234' (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
        assert text_err('name="a"\nkernel="k"\nuuid="6a2b3f6e-1d2c-4a7b-9e3f-0123456789abc"').startswith(
            "t.cfg:3: invalid uuid")

    def test_disk_must_be_list_of_strings(self):
        assert text_err('name="a"\nkernel="k"\ndisk="/x.img"').startswith(
            "t.cfg:3: 'disk' must be a list of strings")
        assert text_err('name="a"\nkernel="k"\nvif=["a", 1]') == "t.cfg:3: 'vif' entry 1 must be a string, got 1"

    def test_cpus_nested_list(self):
        assert text_err('name="a"\nkernel="k"\ncpus=[["1"]]') == \
            "t.cfg:3: 'cpus' entry 0 must be a CPU list string, not a list"

    def test_kernel_must_be_string(self):
        assert text_err('name="a"\nkernel=5') == "t.cfg:2: 'kernel' must be a string (in quotes), got 5"

    def test_syntax_error_from_file(self, guest):
        p = guest('memory = [64\n')
        assert load_err(p).startswith(f"{p}:3: syntax error: unclosed list")


class TestWarnings:
    def test_unknown_and_unsupported_keys(self, guest):
        p = guest('foo = 1\nvfb = [ "vnc=1" ]\nserial = "pty"\nbar.baz = "x"\n')
        d = load(p)
        assert d.warnings == [
            f"{p}:3: warning: unknown key 'foo' ignored",
            f"{p}:4: warning: 'vfb' is not supported by pyxen yet, ignored",
            f"{p}:5: warning: 'serial' is not supported by pyxen yet, ignored",
            f"{p}:6: warning: unknown key 'bar.baz' ignored",
        ]
        assert d.unknown == {"foo": 1, "vfb": ["vnc=1"], "serial": "pty", "bar.baz": "x"}

    def test_soft_affinity_is_named_as_not_applied(self):
        d = text_cfg('name="a"\nkernel="k"\ncpus_soft = "0"')
        assert d.warnings == ["t.cfg:3: warning: soft affinity is not applied (a vCPU is a "
                              "Linux thread, which has only hard affinity)"]

    def test_hotplug_scripts_pyxen_does_not_run_are_named(self):
        d = text_cfg('name="a"\nkernel="k"\n'
                     'vif = ["bridge=br0, script=vif-route", "script=/etc/xen/scripts/vif-bridge"]\n'
                     'disk = ["vdev=xvda, script=block-iscsi, target=/x"]')
        assert d.warnings == [
            "t.cfg:4: warning: disk entry 0: script=block-iscsi is not run: pyxen opens the "
            "target itself (files, block devices, qemu-nbd for image formats)",
            "t.cfg:3: warning: vif entry 0: script=vif-route is not run: pyxen plugs "
            "vif{domid}.0 into bridge=br0 itself, as vif-bridge does (no vif-route, vif-nat "
            "or custom scripts)"]

    def test_override_warning_location(self, guest):
        d = load(guest(""), ["boot='c'"])
        assert d.warnings == ["<command line>:1: warning: 'boot' is not supported by pyxen yet, ignored"]


class TestOverrides:
    def test_overrides_apply(self, guest):
        p = guest('memory = 64\nextra = "a"\n')
        d = load(p, ["memory=128", "extra+=' b'", 'name="other"', "vcpus=2"])
        assert (d.memory, d.cmdline, d.name, d.vcpus) == (128, "a b", "other", 2)
        assert d.location("memory") == "<command line>:1"
        assert d.location("kernel") == f"{p}:2"

    def test_override_errors_use_command_line(self, guest):
        p = guest("")
        assert load_err(p, ["memory=lots"]).startswith("<command line>:1: syntax error: unquoted string 'lots'")
        assert load_err(p, ['memory="lots"']) == "<command line>:1: 'memory' must be a number (MiB), got 'lots'"
        assert load_err(p, ['type="pvh"']).startswith("<command line>:1: type 'pvh' is not")
        assert load_err(p, ['on_crash="boom"']).startswith("<command line>:1: unknown on_crash action")

    def test_missing_config_file(self, tmp_path):
        p = tmp_path / "none.cfg"
        assert load_err(p).startswith(f"{p}: cannot read config file:")


class TestExamples:
    def test_minios_example(self):
        d = DomainConfig.from_file(EXAMPLES / "minios.cfg", check_files=False)
        assert d.name == "minios-hello"
        assert d.type == "pv"
        assert d.kernel == os.path.normpath(EXAMPLES.parent / "guests" / "out" / "hello.elf")
        assert d.memory == 32
        assert d.on_poweroff == "destroy" and d.on_crash == "destroy"
        assert d.warnings == []

    def test_minios_example_requires_built_kernel(self):
        kernel = EXAMPLES.parent / "guests" / "out" / "hello.elf"
        if kernel.is_file():
            assert DomainConfig.from_file(EXAMPLES / "minios.cfg").kernel == str(kernel)
        else:
            with pytest.raises(XlCfgError, match=r"minios\.cfg:\d+: kernel file '../guests/out/hello.elf' not found"):
                DomainConfig.from_file(EXAMPLES / "minios.cfg")

    def test_linux_example(self, tmp_path):
        d = DomainConfig.from_file(EXAMPLES / "linux.cfg", check_files=False)
        assert d.name == "debian" and d.memory == 256 and d.type == "pv"
        assert d.kernel == os.path.normpath(EXAMPLES.parent / ".cache/pyxen/linux/vmlinuz")
        assert d.cmdline.startswith("console=hvc0")
        assert d.on_reboot == "restart"
        assert d.warnings == []


# ---------------------------------------------------------------------------
# fuzz: DomainConfig conversion never raises anything but XlCfgError
# ---------------------------------------------------------------------------

_keys = st.sampled_from([
    "name", "type", "builder", "kernel", "ramdisk", "cmdline", "root", "extra", "memory",
    "maxmem", "vcpus", "maxvcpus", "cpus", "cpus_soft", "uuid", "disk", "vif", "on_poweroff",
    "on_reboot", "on_watchdog", "on_crash", "on_soft_reset", "vfb", "zzz",
])
_atoms = st.one_of(
    st.integers(min_value=0, max_value=2**70).map(str),
    st.sampled_from(["'pv'", "'hvm'", "'destroy'", "'soft-reset'", "'/'", "''", "'12'", "'0x10'",
                     "'x/y'", "'6a2b3f6e-1d2c-4a7b-9e3f-0123456789ab'", "'-1'", "'vmlinuz'"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\n\\'"),
            max_size=12).map(lambda s: "'" + s + "'"),
)
_vals = st.one_of(_atoms, st.lists(_atoms, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(_keys, _vals), max_size=10))
def test_fuzz_domconfig(tmp_path, pairs):
    text = "\n".join(f"{k} = {v}" for k, v in pairs)
    config = parse(text, str(tmp_path / "f.cfg"))
    config.path = str(tmp_path / "f.cfg")
    for check in (False, True):
        try:
            d = DomainConfig.from_config(config, check_files=check)
        except XlCfgError as e:
            assert str(e).startswith(str(tmp_path / "f.cfg") + ":")
        else:
            json.dumps(d.to_dict())
            assert d.maxmem >= d.memory >= 1 and d.maxvcpus >= d.vcpus >= 1


def test_apply_overrides_then_convert():
    config = parse('name="a"\nkernel="k"')
    apply_overrides(config, ["memory=64"])
    assert DomainConfig.from_config(config, check_files=False).memory == 64
