"""Tests for xl device spec parsing (pyxen.toolstack.devspec) and its use
in DomainConfig."""

import dataclasses
import random
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyxen.toolstack.devspec import (
    DEFAULT_RATE_INTERVAL_US,
    DevSpecError,
    DiskSpec,
    VifSpec,
    generate_mac,
    parse_disk_spec,
    parse_mac,
    parse_rate,
    parse_vif_spec,
    vdev_to_devid,
)
from pyxen.toolstack.domconfig import DomainConfig
from pyxen.toolstack.xlcfg import XlCfgError, parse


def disk_err(spec):
    with pytest.raises(DevSpecError) as info:
        parse_disk_spec(spec)
    return str(info.value)


def vif_err(spec, index=0):
    with pytest.raises(DevSpecError) as info:
        parse_vif_spec(spec, index)
    return str(info.value)


def same(a: DiskSpec, b: DiskSpec) -> bool:
    """Equal apart from the source string."""
    return dataclasses.replace(a, spec="") == dataclasses.replace(b, spec="")


def letters(index: int) -> str:
    """0 -> 'a', 25 -> 'z', 26 -> 'aa' (the xvd drive-letter scheme)."""
    out = ""
    index += 1
    while index:
        index, r = divmod(index - 1, 26)
        out = chr(ord("a") + r) + out
    return out


# ---------------------------------------------------------------------------
# vdev -> device number

class TestVdev:
    @pytest.mark.parametrize("vdev, devid", [
        ("xvda", 202 << 8),
        ("xvdb2", 202 << 8 | 1 << 4 | 2),
        ("xvdp15", 202 << 8 | 15 << 4 | 15),
        ("xvdq", 1 << 28 | 16 << 8),             # disk 16: extended form
        ("xvda16", 1 << 28 | 0 << 8 | 16),        # partition 16: extended form
        ("xvdtq37", 1 << 28 | 536 << 8 | 37),     # the manual's example
        ("xvdaa", 1 << 28 | 26 << 8),
        ("xvda255", 1 << 28 | 255),
        ("d0", 202 << 8),
        ("d0p0", 202 << 8),
        ("d1p2", 202 << 8 | 1 << 4 | 2),
        ("d536p37", 1 << 28 | 536 << 8 | 37),
        ("d1048575p255", 1 << 28 | 1048575 << 8 | 255),
        ("hda", 3 << 8),
        ("hdb", 3 << 8 | 1 << 6),
        ("hdc", 22 << 8),
        ("hdc2", 22 << 8 | 2),
        ("hdd63", 22 << 8 | 1 << 6 | 63),
        ("sda", 8 << 8),
        ("sdb3", 8 << 8 | 1 << 4 | 3),
        ("sdp15", 8 << 8 | 15 << 4 | 15),
        ("51712", 51712),
        ("0xca00", 51712),
        ("0144", 0o144),
        ("0", 0),
        ("2147483647", 2147483647),
    ])
    def test_numbers(self, vdev, devid):
        assert vdev_to_devid(vdev) == devid

    @pytest.mark.parametrize("vdev", [
        "", "xvd", "xvd5", "xvd!", "xvdA", "XVDA", "xvda0", "xvda01", "xvda256",
        "xvda+1", "xvda 1", " xvda", "xvdbzzzzz", "d1048576p0", "d0p256", "dxp1",
        "hde", "hda64", "hd", "sdq", "sda16", "sd", "vda", "xvda:cdrom",
        "-1", "0x", "08", "2147483648", "0x80000000", "12abc",
    ])
    def test_bad(self, vdev):
        with pytest.raises(DevSpecError, match="bad vdev"):
            vdev_to_devid(vdev)

    @given(st.integers(0, (1 << 20) - 1), st.integers(0, 255))
    def test_xvd_matches_the_dp_form(self, disk, part):
        name = "xvd" + letters(disk) + (str(part) if part else "")
        expected = ((202 << 8 | disk << 4 | part) if disk < 16 and part < 16
                    else (1 << 28 | disk << 8 | part))
        assert vdev_to_devid(name) == expected == vdev_to_devid(f"d{disk}p{part}")

    @given(st.integers(0, 3), st.integers(0, 63))
    def test_hd(self, disk, part):
        name = "hd" + "abcd"[disk] + (str(part) if part else "")
        major = 3 if disk < 2 else 22
        assert vdev_to_devid(name) == major << 8 | (disk & 1) << 6 | part

    @given(st.integers(0, 15), st.integers(0, 15))
    def test_sd(self, disk, part):
        name = "sd" + letters(disk) + (str(part) if part else "")
        assert vdev_to_devid(name) == 8 << 8 | disk << 4 | part

    @given(st.text(max_size=12))
    def test_never_crashes(self, text):
        try:
            n = vdev_to_devid(text)
        except DevSpecError:
            return
        assert 0 <= n < 1 << 31


# ---------------------------------------------------------------------------
# disk specs

class TestDiskSpec:
    def test_key_value_form(self):
        d = parse_disk_spec("format=qcow2, vdev=xvdb, access=ro, target=/img/a.qcow2")
        assert d.target == "/img/a.qcow2"
        assert d.format == "qcow2"
        assert d.vdev == "xvdb" and d.devid == 51728
        assert d.access == "ro" and d.readonly
        assert d.devtype == "disk" and not d.is_cdrom
        assert d.backend == "0" and d.backendtype is None and d.script is None
        assert d.discard is True and d.direct_io_safe is False and d.trusted is True
        assert d.spec == "format=qcow2, vdev=xvdb, access=ro, target=/img/a.qcow2"

    def test_defaults(self):
        d = parse_disk_spec("/dev/vg/root,,xvda")
        assert (d.target, d.format, d.vdev, d.access, d.devtype) == \
            ("/dev/vg/root", "raw", "xvda", "rw", "disk")
        assert not d.readonly

    def test_frozen(self):
        d = parse_disk_spec("/x,,xvda")
        with pytest.raises(dataclasses.FrozenInstanceError):
            d.vdev = "xvdb"  # type: ignore[misc]

    # The manual's groups of equivalent strings.
    @pytest.mark.parametrize("spec", [
        "/dev/vg/guest-volume,raw,hda,rw",
        "format=raw, vdev=hda, access=rw, target=/dev/vg/guest-volume",
        "raw:/dev/vg/guest-volume,hda,w",
    ])
    def test_manual_disk_equivalents(self, spec):
        assert same(parse_disk_spec(spec), parse_disk_spec("/dev/vg/guest-volume,,hda"))

    @pytest.mark.parametrize("spec", [
        "/root/image.iso,,hdc,,cdrom",
        "/root/image.iso,raw,hdc,devtype=cdrom",
        "format=raw, vdev=hdc, access=ro, devtype=cdrom, target=/root/image.iso",
        "raw:/root/image.iso,hdc:cdrom,ro",
    ])
    def test_manual_cdrom_equivalents(self, spec):
        ref = parse_disk_spec("/root/image.iso,,hdc,cdrom")
        assert ref.is_cdrom and ref.readonly and ref.target == "/root/image.iso"
        assert ref.format == "raw" and ref.devid == 22 << 8
        assert same(parse_disk_spec(spec), ref)

    @pytest.mark.parametrize("spec, access", [
        ("/x,,xvda,r", "ro"), ("/x,,xvda,ro", "ro"), ("/x,,xvda,w", "rw"),
        ("/x,,xvda,rw", "rw"), ("/x,,xvda,", "rw"), ("/x,,xvda", "rw"),
        ("access=r,vdev=xvda,target=/x", "ro"), ("access=,vdev=xvda,target=/x", "rw"),
    ])
    def test_access(self, spec, access):
        assert parse_disk_spec(spec).access == access

    @pytest.mark.parametrize("fmt", ["raw", "qcow", "qcow2", "vhd", "qed"])
    def test_formats(self, fmt):
        assert parse_disk_spec(f"/x,{fmt},xvda").format == fmt
        assert parse_disk_spec(f"format={fmt},vdev=xvda,target=/x").format == fmt

    def test_cdrom_forces_read_only(self):
        assert parse_disk_spec("/x.iso,,hdc,rw,cdrom").access == "ro"
        assert parse_disk_spec("devtype=cdrom,access=rw,vdev=xvdc,target=/x.iso").readonly

    @pytest.mark.parametrize("spec", [
        ",hdc:cdrom,r",                 # xend's empty cdrom
        "vdev=hdc,devtype=cdrom",
        "vdev=hdc,cdrom,target=",
        ",,hdc,,cdrom",
        "cdrom,vdev=xvdc",
    ])
    def test_empty_cdrom(self, spec):
        d = parse_disk_spec(spec)
        assert d.is_cdrom and d.target is None and d.format == "empty" and d.readonly

    def test_explicit_devtype_disk(self):
        d = parse_disk_spec("/x,,xvda:disk,w")
        assert d.vdev == "xvda" and d.devtype == "disk"
        assert parse_disk_spec("devtype=disk,/x,,xvda").devtype == "disk"

    # -- deprecated prefixes ------------------------------------------------------
    @pytest.mark.parametrize("spec, target, fmt, vdev, access", [
        ("phy:/dev/vg/x,xvda,w", "/dev/vg/x", "raw", "xvda", "rw"),
        ("file:/img,xvda1,r", "/img", "raw", "xvda1", "ro"),
        ("tap:aio:/img,xvda,w", "/img", "raw", "xvda", "rw"),
        ("tap:qcow2:/img,xvdb,w", "/img", "qcow2", "xvdb", "rw"),
        ("tap2:tapdisk:vhd:/img,xvdb,w", "/img", "vhd", "xvdb", "rw"),
        ("ioemu:/img,hda,w", "/img", "raw", "hda", "rw"),
        ("raw:/img,xvda", "/img", "raw", "xvda", "rw"),
        ("qcow2:/img,xvda,r", "/img", "qcow2", "xvda", "ro"),
        ("qcow:/img,xvda", "/img", "qcow", "xvda", "rw"),
        ("  phy:/dev/sdb,  xvdc, w", "/dev/sdb", "raw", "xvdc", "rw"),
    ])
    def test_legacy(self, spec, target, fmt, vdev, access):
        d = parse_disk_spec(spec)
        assert (d.target, d.format, d.vdev, d.access) == (target, fmt, vdev, access)
        assert d.backendtype is None  # the old prefixes are ignored

    def test_legacy_needs_vdev(self):
        assert disk_err("raw:/img") == "disk spec 'raw:/img': no vdev specified"
        assert disk_err("qcow2:/img") == "disk spec 'qcow2:/img': no vdev specified"

    def test_legacy_prefix_skips_the_format_slot(self):
        # After phy: the second positional is the vdev, not the format.
        assert parse_disk_spec("phy:/dev/x,xvdb").vdev == "xvdb"
        # Without a prefix it would be the format.
        assert "unknown format 'xvdb'" in disk_err("/dev/x,xvdb")

    @pytest.mark.parametrize("prefix", ["iscsi", "nbd", "enbd", "drbd"])
    def test_script_prefixes(self, prefix):
        d = parse_disk_spec(f"{prefix}:iqn.2001-04.com.example:disk,xvda,w")
        assert d.script == f"block-{prefix}"
        assert d.target == "iqn.2001-04.com.example:disk"

    def test_unknown_prefix(self):
        assert disk_err("foo:/img,xvda,w") == \
            "disk spec 'foo:/img,xvda,w': unknown disk prefix 'foo:'"

    def test_colon_in_target_is_not_a_prefix(self):
        d = parse_disk_spec("nbd:localhost:10809,xvda,w")
        assert d.target == "localhost:10809" and d.script == "block-nbd"
        assert parse_disk_spec("/dev/disk/by-id/a:b,,xvda").target == "/dev/disk/by-id/a:b"

    # -- target= -------------------------------------------------------------------
    def test_target_takes_the_rest(self):
        d = parse_disk_spec("vdev=xvda, target=/srv/a,b=c,d ")
        assert d.target == "/srv/a,b=c,d "   # trailing whitespace kept, as documented
        assert parse_disk_spec("vdev=xvda,target=/x,").target == "/x"

    def test_target_after_empty_positional(self):
        d = parse_disk_spec(",raw,xvda,rw,target=/a,b")
        assert d.target == "/a,b" and d.format == "raw"

    def test_target_respecified(self):
        assert disk_err("/x,raw,xvda,target=/y") == \
            "disk spec '/x,raw,xvda,target=/y': target respecified ('/x', then '/y')"

    def test_equals_in_positional_target(self):
        e = disk_err("/srv/a=b,,xvda")
        assert e.startswith("disk spec '/srv/a=b,,xvda': bad parameter '/srv/a=b'")
        assert "target=" in e

    # -- other keys and flags -----------------------------------------------------------
    def test_flags_and_keys(self):
        d = parse_disk_spec(
            "backend=driverdom, backendtype=qdisk, script=block-foo, direct-io-safe, "
            "no-discard, untrusted, specification=xen, grant_usage=1, vdev=xvda, target=/x")
        assert d.backend == "driverdom" and d.backendtype == "qdisk"
        assert d.script == "block-foo"
        assert d.direct_io_safe and d.discard is False and d.trusted is False
        assert d.specification == "xen" and d.grant_usage is True
        assert parse_disk_spec("/x,,xvda,discard").discard is True
        assert parse_disk_spec("no-discard,discard,/x,,xvda").discard is True

    @pytest.mark.parametrize("bt", ["phy", "tap", "qdisk"])
    def test_backendtypes(self, bt):
        assert parse_disk_spec(f"backendtype={bt},/x,,xvda").backendtype == bt

    def test_colo(self):
        d = parse_disk_spec("colo,colo-host=10.0.0.2,colo-port=9000,colo-export=e1,"
                            "active-disk=/a,hidden-disk=/h,/x,,xvda")
        assert d.colo and d.colo_host == "10.0.0.2" and d.colo_port == 9000
        assert (d.colo_export, d.active_disk, d.hidden_disk) == ("e1", "/a", "/h")

    def test_whitespace(self):
        d = parse_disk_spec("  format = raw ,\tvdev=  xvda  , access =ro,target=/x")
        assert (d.format, d.vdev, d.access, d.target) == ("raw", "xvda", "ro", "/x")
        d = parse_disk_spec(" /x , qcow2 , xvdb , r ")
        assert (d.target, d.format, d.vdev, d.access) == ("/x", "qcow2", "xvdb", "ro")
        assert parse_disk_spec("/x,,xvda, cdrom ").is_cdrom

    def test_same_value_twice_is_fine(self):
        assert parse_disk_spec("format=raw,format=raw,vdev=xvda,vdev=xvda,target=/x").vdev == "xvda"

    # -- errors ------------------------------------------------------------------------------
    @pytest.mark.parametrize("spec, detail", [
        ("vdev=xvd!,target=/x", "bad vdev 'xvd!'"),
        ("/x,,xvd!", "bad vdev 'xvd!'"),
        ("/x,,hde", "bad vdev 'hde'"),
        ("foo=1,/x,,xvda", "unknown parameter 'foo'"),
        ("/x,,xvda,rw,extra", "too many positional parameters at 'extra'"),
        ("/x,vmdk,xvda", "unknown format 'vmdk'"),
        ("/x,,xvda,rx", "unknown access 'rx'"),
        ("devtype=floppy,/x,,xvda", "unknown devtype 'floppy'"),
        ("/x,,xvda:floppy", "unknown device type 'floppy'"),
        ("backendtype=nfs,/x,,xvda", "unknown backendtype 'nfs'"),
        ("specification=scsi,/x,,xvda", "unknown specification 'scsi'"),
        ("grant_usage=2,/x,,xvda", "bad grant_usage '2'"),
        ("colo-port=x,/x,,xvda", "bad colo-port 'x'"),
        ("/x", "no vdev specified"),
        ("", "no vdev specified"),
        ("/x,raw", "no vdev specified"),
        ("vdev=xvda", "no target specified"),
        (",,xvda", "no target specified"),
        ("vdev=xvda,vdev=xvdb,target=/x", "vdev respecified ('xvda', then 'xvdb')"),
        ("format=raw,format=qcow2,/x,xvda", "format respecified"),
        ("devtype=disk,cdrom,/x,,xvda", "devtype respecified"),
        ("VDEV=xvda,/x", "bad parameter 'VDEV=xvda'"),
    ])
    def test_errors(self, spec, detail):
        e = disk_err(spec)
        assert e.startswith(f"disk spec '{spec}': ")
        assert detail in e

    def test_not_a_string(self):
        with pytest.raises(DevSpecError):
            parse_disk_spec(None)  # type: ignore[arg-type]

    # -- properties --------------------------------------------------------------------------
    @settings(max_examples=200)
    @given(
        target=st.text(string.ascii_letters + string.digits + "/._-", min_size=1, max_size=20)
              .map(lambda t: "/" + t),
        fmt=st.sampled_from(["raw", "qcow", "qcow2", "vhd", "qed"]),
        disk=st.integers(0, 300), part=st.integers(0, 20),
        access=st.sampled_from(["r", "ro", "w", "rw"]),
        order=st.randoms(use_true_random=False),
        pad=st.sampled_from(["", " ", "  ", "\t"]),
    )
    def test_named_and_positional_forms_agree(self, target, fmt, disk, part, access,
                                              order, pad):
        vdev = "xvd" + letters(disk) + (str(part) if part else "")
        positional = parse_disk_spec(f"{target},{fmt},{vdev},{access}")
        named = [f"format={fmt}", f"vdev={vdev}", f"access={access}"]
        order.shuffle(named)
        spec = ",".join(pad + x for x in named) + f",{pad}target={target}"
        assert same(parse_disk_spec(spec), positional)
        assert positional.devid == vdev_to_devid(f"d{disk}p{part}")
        assert positional.readonly == (access in ("r", "ro"))

    @settings(max_examples=300)
    @given(st.text(alphabet=",=: abcdhlnoprstvwxyz/0123456789-_", max_size=30))
    def test_garbage_raises_only_devspecerror(self, spec):
        try:
            d = parse_disk_spec(spec)
        except DevSpecError as e:
            assert str(e).startswith(f"disk spec '{spec}': ")
            return
        assert d.vdev and d.devid >= 0
        assert d.target or d.is_cdrom
        assert d.access in ("rw", "ro") and d.format in ("raw", "qcow", "qcow2", "vhd", "qed", "empty")


# ---------------------------------------------------------------------------
# vif specs

class TestMacAndRate:
    def test_parse_mac(self):
        assert parse_mac("00:16:3E:74:3d:76") == "00:16:3e:74:3d:76"
        assert parse_mac("0:16:3e:1:2:3") == "00:16:3e:01:02:03"

    @pytest.mark.parametrize("mac", ["", "00:16:3e:74:3d", "00:16:3e:74:3d:76:01",
                                     "00-16-3e-74-3d-76", "00:16:3e:74:3d:7g",
                                     "000:16:3e:74:3d:76", "00:16:3e:74:3d:"])
    def test_bad_mac(self, mac):
        with pytest.raises(DevSpecError, match="bad mac"):
            parse_mac(mac)

    @given(st.text(max_size=10), st.integers(0, 1000))
    def test_generated_mac(self, seed, index):
        mac = generate_mac(seed, index)
        assert mac == generate_mac(seed, index)
        assert parse_mac(mac) == mac
        octets = [int(x, 16) for x in mac.split(":")]
        assert octets[:3] == [0x00, 0x16, 0x3E] and octets[3] < 0x80

    def test_generated_macs_differ(self):
        macs = {generate_mac("dom", i) for i in range(64)}
        assert len(macs) == 64
        assert generate_mac("a", 0) != generate_mac("b", 0)

    @pytest.mark.parametrize("rate, per_interval, interval", [
        ("10Mb/s", 10_000_000 // 8 * 50_000 // 1_000_000, 50_000),
        ("250KB/s", 250_000 * 50_000 // 1_000_000, 50_000),
        ("1MB/s@20ms", 20_000, 20_000),             # the manual's example
        ("1GB/s@20ms", 20_000_000, 20_000),
        ("100kb/s@50ms", 100_000 // 8 * 50_000 // 1_000_000, 50_000),
        ("100Kb/s@50ms", 625, 50_000),
        ("8b/s@1s", 1, 1_000_000),
        ("1000B/s@500us", None, 500),            # 0.5 bytes per interval
        ("2000B/s@1000", 2, 1000),                  # no unit: microseconds
        (" 1MB/s @ 20ms ", 20_000, 20_000),
    ])
    def test_rate(self, rate, per_interval, interval):
        if per_interval is None:
            with pytest.raises(DevSpecError, match="less than one byte"):
                parse_rate(rate)
        else:
            assert parse_rate(rate) == (per_interval, interval)

    @pytest.mark.parametrize("rate", [
        "", "@20ms", "10Mb", "10Mb/sec", "10mb/s", "10TB/s", "1.5MB/s", "0MB/s",
        "-1MB/s", "4294967296B/s", "1MB/s@", "1MB/s@0ms", "1MB/s@20 ms",
        "1MB/s@20m", "1MB/s@20min", "1MB/s@5000s", "MB/s",
    ])
    def test_bad_rate(self, rate):
        with pytest.raises(DevSpecError, match="bad rate"):
            parse_rate(rate)

    def test_default_interval(self):
        assert DEFAULT_RATE_INTERVAL_US == 50_000


class TestVifSpec:
    def test_defaults(self):
        v = parse_vif_spec("", 2, seed="dom")
        assert isinstance(v, VifSpec)
        assert v.devid == 2
        assert v.mac == generate_mac("dom", 2) and v.mac_generated
        assert v.bridge == "xenbr0" and v.type == "vif" and v.backend == "0"
        assert v.ip == () and v.model is None and v.vifname is None and v.script is None
        assert v.rate is None and v.rate_bytes_per_interval is None and v.rate_interval_us is None
        assert v.mtu is None and v.gatewaydev is None and v.accel is None
        assert v.netns is None

    def test_manual_examples(self):
        v = parse_vif_spec("mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr0")
        assert v.mac == "00:16:3e:74:3d:76" and not v.mac_generated
        assert v.model == "rtl8139" and v.bridge == "xenbr0"
        assert parse_vif_spec("mac=00:16:3e:5f:48:e4,bridge=xenbr1").bridge == "xenbr1"

    def test_all_keys(self):
        v = parse_vif_spec(
            "mac=00:16:3e:00:00:01, bridge=br1, ip=192.0.2.1 2001:db8::1 10.0.0.0/8, "
            "type=ioemu, model=e1000, vifname=guest0, script=vif-route, backend=netdom, "
            "rate=10Mb/s@20ms, mtu=9000, gatewaydev=eth0, accel=x, devid=7", 1)
        assert v.ip == ("192.0.2.1", "2001:db8::1", "10.0.0.0/8")
        assert (v.type, v.model, v.vifname, v.script, v.backend) == \
            ("ioemu", "e1000", "guest0", "vif-route", "netdom")
        assert v.rate == "10Mb/s@20ms"
        assert (v.rate_bytes_per_interval, v.rate_interval_us) == (25_000, 20_000)
        assert (v.mtu, v.gatewaydev, v.accel, v.devid) == (9000, "eth0", "x", 7)

    def test_netns_is_a_pyxen_extension(self):
        v = parse_vif_spec("bridge=xenbr0, netns=guests-1.a_b")
        assert (v.bridge, v.netns) == ("xenbr0", "guests-1.a_b")
        assert parse_vif_spec("netns=").netns is None

    def test_netdev_alias(self):
        assert parse_vif_spec("netdev=eth1").gatewaydev == "eth1"

    def test_colo_keys_kept(self):
        v = parse_vif_spec("forwarddev=eth2,colo_checkpoint_port=9000")
        assert v.colo == (("forwarddev", "eth2"), ("colo_checkpoint_port", "9000"))

    def test_whitespace_and_empty_entries(self):
        v = parse_vif_spec("  bridge = br0 ,, mac= 00:16:3e:aa:bb:cc ,")
        assert v.bridge == "br0" and v.mac == "00:16:3e:aa:bb:cc"

    def test_last_value_wins(self):
        assert parse_vif_spec("bridge=a,bridge=b").bridge == "b"

    def test_all_zero_mac_means_generate(self):
        v = parse_vif_spec("mac=00:00:00:00:00:00", 3, "x")
        assert v.mac_generated and v.mac == generate_mac("x", 3)

    def test_generated_mac_depends_on_seed_and_index(self):
        assert parse_vif_spec("", 0, "a").mac == parse_vif_spec("bridge=b", 0, "a").mac
        assert parse_vif_spec("", 0, "a").mac != parse_vif_spec("", 1, "a").mac

    @pytest.mark.parametrize("spec, detail", [
        ("colour=blue", "unknown key 'colour'"),
        ("bridge", "'bridge' is not a key=value setting"),
        ("mac=00:16:3e:00:00", "bad mac '00:16:3e:00:00'"),
        ("mac=zz:16:3e:00:00:01", "bad mac"),
        ("rate=10Mb", "bad rate '10Mb'"),
        ("rate=", "bad rate ''"),
        ("rate=1MB/s@0s", "interval must be more than 0"),
        ("type=pv", "bad type 'pv'"),
        ("ip=300.1.1.1", "bad ip '300.1.1.1'"),
        ("mtu=10", "bad mtu '10'"),
        ("mtu=big", "bad mtu 'big'"),
        ("devid=-1", "bad devid '-1'"),
        ("devid=", "bad devid ''"),
        ("vifname=a/b", "bad vifname 'a/b'"),
        ("vifname=abcdefghijklmnop", "bad vifname"),
        ("netns=../../proc/1/ns/net", "bad netns '../../proc/1/ns/net'"),
        ("netns=a/b", "bad netns 'a/b'"),
        ("netns=.", "bad netns '.'"),
        ("netns=-x", "bad netns '-x'"),
        ("netns=" + "n" * 65, "bad netns"),
        ("Mac=00:16:3e:00:00:01", "unknown key 'Mac'"),
    ])
    def test_errors(self, spec, detail):
        e = vif_err(spec)
        assert e.startswith(f"vif spec '{spec}': ")
        assert detail in e

    @settings(max_examples=300)
    @given(st.text(alphabet="=, abcdeimprstvx0123456789:/@.MBbs", max_size=30),
           st.integers(0, 10))
    def test_garbage_raises_only_devspecerror(self, spec, index):
        try:
            v = parse_vif_spec(spec, index)
        except DevSpecError as e:
            assert str(e).startswith(f"vif spec '{spec}': ")
            return
        assert parse_mac(v.mac) == v.mac and v.devid >= 0


# ---------------------------------------------------------------------------
# DomainConfig integration

@pytest.fixture
def guest(tmp_path):
    (tmp_path / "vmlinuz").write_bytes(b"\x7fELF fake")

    def write(body, name="dom.cfg", header='name = "dom"\nkernel = "vmlinuz"\n'):
        p = tmp_path / name
        p.write_text(header + body)
        return p

    return write


def load_err(path):
    with pytest.raises(XlCfgError) as info:
        DomainConfig.from_file(path)
    return str(info.value)


def text_err(text):
    with pytest.raises(XlCfgError) as info:
        DomainConfig.from_config(parse(text, "t.cfg"), check_files=False)
    return str(info.value)


class TestDomainConfig:
    def test_good_devices(self, guest):
        p = guest('memory = 64\n'
                  'disk = [ "phy:/dev/vg/root,xvda,w",\n'
                  '         "format=qcow2, vdev=xvdb, target=/img/data.qcow2",\n'
                  '         ",hdc:cdrom,r" ]\n'
                  'vif = [ "bridge=br0", "", "mac=00:16:3e:01:02:03,rate=10Mb/s" ]\n')
        d = DomainConfig.from_file(p)
        assert d.disk == ["phy:/dev/vg/root,xvda,w",
                          "format=qcow2, vdev=xvdb, target=/img/data.qcow2",
                          ",hdc:cdrom,r"]
        assert d.vif == ["bridge=br0", "", "mac=00:16:3e:01:02:03,rate=10Mb/s"]
        assert [x.devid for x in d.disk_specs()] == [51712, 51728, 22 << 8]
        vifs = d.vif_specs()
        assert [v.devid for v in vifs] == [0, 1, 2]
        assert vifs[0].mac == generate_mac("dom", 0)
        assert vifs[2].mac == "00:16:3e:01:02:03"
        assert d.warnings == []

    def test_bad_disk_names_file_and_line(self, guest):
        p = guest('memory = 64\ndisk = [ "vdev=xvd!,target=/x" ]\n')
        assert load_err(p) == (f"{p}:4: disk entry 0: disk spec 'vdev=xvd!,target=/x': "
                               "bad vdev 'xvd!'")

    def test_bad_second_disk(self, guest):
        p = guest('disk = [ "/a,,xvda",\n  "/b,,xvdb,rw,oops" ]\n')
        assert load_err(p) == (f"{p}:3: disk entry 1: disk spec '/b,,xvdb,rw,oops': "
                               "too many positional parameters at 'oops'")

    def test_disk_without_vdev(self):
        assert text_err('name="a"\nkernel="k"\ndisk=["/x.img"]') == \
            "t.cfg:3: disk entry 0: disk spec '/x.img': no vdev specified"

    def test_duplicate_vdev(self):
        e = text_err('name="a"\nkernel="k"\n\ndisk=["/a,,xvda", "/b,,xvdb", "vdev=xvda,target=/c"]')
        assert e == "t.cfg:4: disk entries 0 and 2 both use vdev 'xvda', device number 51712"

    def test_duplicate_devid_different_spelling(self):
        e = text_err('name="a"\nkernel="k"\ndisk=["/a,,xvda", "/b,,d0p0"]')
        assert e.startswith("t.cfg:3: disk entries 0 and 1 both use vdev 'd0p0' "
                            "(same device as 'xvda')")

    def test_hd_and_xvd_are_different_devices(self):
        d = DomainConfig.from_config(
            parse('name="a"\nkernel="k"\ndisk=["/a,,hda", "/b,,xvda"]', "t.cfg"),
            check_files=False)
        assert len(d.disk) == 2

    def test_bad_vif_names_file_and_line(self, guest):
        p = guest('vif = [ "bridge=br0",\n        "mac=00:16:3e:zz:00:01" ]\n')
        assert load_err(p).startswith(
            f"{p}:3: vif entry 1: vif spec 'mac=00:16:3e:zz:00:01': bad mac")

    def test_unknown_vif_key(self):
        assert text_err('name="a"\nkernel="k"\nvif=["brigde=br0"]') == \
            "t.cfg:3: vif entry 0: vif spec 'brigde=br0': unknown key 'brigde'"

    def test_duplicate_vif_devid(self):
        assert text_err('name="a"\nkernel="k"\nvif=["devid=1", ""]') == \
            "t.cfg:3: vif entries 0 and 1 both use devid 1"

    def test_command_line_override_is_checked(self, guest):
        p = guest('memory = 64\n')
        with pytest.raises(XlCfgError) as info:
            DomainConfig.from_file(p, ['disk=["/x,,sdz"]'])
        assert str(info.value) == ("<command line>:1: disk entry 0: disk spec '/x,,sdz': "
                                   "bad vdev 'sdz'")

    def test_to_dict_round_trip_keeps_raw_strings(self, guest):
        p = guest('disk = [ " /a , , xvda " ]\nvif = [ " bridge = br0 " ]\n')
        d = DomainConfig.from_file(p)
        d2 = DomainConfig.from_dict(d.to_dict())
        assert d2.disk == [" /a , , xvda "] and d2.vif == [" bridge = br0 "]
        assert d2.disk_specs()[0].target == "/a"


def test_random_valid_disk_lists_load():
    rng = random.Random(1)
    for _ in range(50):
        n = rng.randint(1, 6)
        disks = rng.sample(range(40), n)
        entries = [f"/img/{i}.img,,xvd{letters(i)}" for i in disks]
        text = 'name="a"\nkernel="k"\ndisk=[' + ", ".join(f'"{e}"' for e in entries) + "]"
        d = DomainConfig.from_config(parse(text, "t.cfg"), check_files=False)
        assert sorted(x.devid for x in d.disk_specs()) == \
            sorted(vdev_to_devid(f"d{i}p0") for i in disks)
