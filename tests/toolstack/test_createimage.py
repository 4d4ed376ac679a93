"""create-image's checks and generated files (toolstack/createimage.py) that
need neither root nor the network; the image itself is made and booted in
tests/linux/test_debian_image.py."""
from __future__ import annotations

import pytest

from pyxen.toolstack import createimage as ci
from pyxen.toolstack.createimage import CreateImageError, ImageSpec, check_spec
from pyxen.toolstack.domconfig import DomainConfig


def spec(tmp_path, **kw):
    return ImageSpec(hostname=kw.pop("hostname", "web1"), dir=str(tmp_path), **kw)


@pytest.mark.parametrize("kw, message", [
    ({"hostname": "bad_name"}, "bad hostname"),
    ({"format": "vhd"}, "bad format"),
    ({"size": "512M"}, "too small"),
    ({"size": "lots"}, "bad size"),
    ({"ip": "192.0.2.5/24", "dhcp": True}, "exclude each other"),
    ({"ip": "192.0.2.5"}, "give the prefix"),
    ({"ip": "192.0.2.5/24", "gateway": "198.51.100.1"}, "is not in 192.0.2.0/24"),
    ({"gateway": "192.0.2.1"}, "--gateway needs --ip"),
    ({"ssh_key": "/nonexistent.pub"}, "no such file"),
    ({"password": "a:b"}, "may not contain"),
])
def test_bad_options_are_refused(tmp_path, kw, message):
    with pytest.raises(CreateImageError, match=message):
        check_spec(spec(tmp_path, **kw))


def test_existing_image_needs_force(tmp_path):
    (tmp_path / "web1.img").write_bytes(b"")
    with pytest.raises(CreateImageError, match="exists"):
        check_spec(spec(tmp_path))
    check_spec(spec(tmp_path, force=True))


def test_sizes():
    assert ci.size_bytes("4G") == 4 << 30
    assert ci.size_bytes("2048") == 2048 << 20
    assert ci.size_bytes("1536M") == 1536 << 20


def test_host_mirror_reads_apt_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n")
    assert ci.host_mirror("bookworm", str(tmp_path)) == "http://mirror.example/debian"
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://old.example/debian bullseye main\n")
    assert ci.host_mirror("bullseye", str(tmp_path)) == "http://old.example/debian"
    assert ci.host_mirror("trixie", str(tmp_path)) == ci.DEFAULT_MIRROR


def test_network_config(tmp_path):
    static = ci.network_config(spec(tmp_path, ip="192.0.2.5/24", gateway="192.0.2.1"))
    assert "iface eth0 inet static\n    address 192.0.2.5/24\n    gateway 192.0.2.1" in static
    assert "allow-hotplug eth0" in static
    assert "iface eth0 inet dhcp" in ci.network_config(spec(tmp_path, dhcp=True))


def test_generated_config_is_valid_xl_cfg(tmp_path):
    s = spec(tmp_path, ip="192.0.2.5/24", format="qcow2", memory=256, vcpus=1)
    text = ci.config_text(s, s.image_path, "00:16:3e:01:02:03")
    d = DomainConfig.from_text(text)
    assert (d.name, d.bootloader, d.kernel, d.memory, d.vcpus) == ("web1", "pygrub", None, 256, 1)
    disk = d.disk_specs()[0]
    assert (disk.format, disk.vdev, disk.target) == ("qcow2", "xvda", str(tmp_path / "web1.qcow2"))
    vif = d.vif_specs()[0]
    assert (vif.mac, vif.bridge, vif.ip) == ("00:16:3e:01:02:03", "xenbr0", ("192.0.2.5",))
    assert d.warnings == []


def test_random_mac_is_xens_oui():
    mac = ci.random_mac()
    assert mac.startswith("00:16:3e:") and int(mac.split(":")[3], 16) < 0x80


def test_requirements_name_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(ci.os, "geteuid", lambda: 1000)
    assert "needs root" in ci.requirements_problem(spec(tmp_path))
    monkeypatch.setattr(ci.os, "geteuid", lambda: 0)
    monkeypatch.setattr(ci.shutil, "which", lambda tool: None if tool == "debootstrap" else "/x")
    assert ci.requirements_problem(spec(tmp_path)) == \
        "create-image needs debootstrap (Debian package debootstrap): apt-get install them"
