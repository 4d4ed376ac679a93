"""bootloader= (toolstack/bootloader.py): pyxen's pygrub reads the guest's
GRUB configuration and files from an ext4 image made here with mke2fs -d
(whole disk, in a partition, as qcow2), and an external bootloader is run
with libxl's arguments and output format. No KVM needed."""
from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest

from pyxen.toolstack.bootloader import (BootloaderError, choose_entry, parse_grub2,
                                        parse_grub_legacy, partition_offsets, run_bootloader)
from pyxen.toolstack.builder import CreateError, load_boot_files
from pyxen.toolstack.domconfig import DomainConfig

GRUB_CFG = """\
set default="1"
set timeout=5
set kver=6.1.0-9
menuentry 'Debian GNU/Linux' --class debian {
\tinsmod ext2
\tlinux (hd0,msdos1)/boot/vmlinuz-${kver} root=/dev/xvda ro quiet
\tinitrd /boot/initrd.img-${kver}
}
submenu 'Advanced options' {
\tmenuentry "Debian, recovery" {
\t\tlinux /boot/vmlinuz-old root=/dev/xvda ro single
\t\tinitrd /boot/initrd.img-old /boot/extra.img
\t}
}
"""


def test_parse_grub2_flattens_submenus_and_substitutes():
    entries, default = parse_grub2(GRUB_CFG)
    assert default == "1"
    assert [e.title for e in entries] == ["Debian GNU/Linux", "Debian, recovery"]
    assert entries[0].kernel == "/boot/vmlinuz-6.1.0-9"
    assert entries[0].args == "root=/dev/xvda ro quiet"
    assert entries[0].initrd == ["/boot/initrd.img-6.1.0-9"]
    assert entries[1].initrd == ["/boot/initrd.img-old", "/boot/extra.img"]


def test_choose_entry():
    entries, default = parse_grub2(GRUB_CFG)
    assert choose_entry(entries, default, None).title == "Debian, recovery"
    assert choose_entry(entries, default, "0").title == "Debian GNU/Linux"
    assert choose_entry(entries, default, "Debian GNU/Linux").kernel == "/boot/vmlinuz-6.1.0-9"
    assert choose_entry(entries, "saved", None).title == "Debian GNU/Linux"
    with pytest.raises(BootloaderError, match="no boot entry '7'"):
        choose_entry(entries, default, "7")


def test_parse_grub_legacy():
    entries, default = parse_grub_legacy(
        "default 0\ntimeout 2\ntitle Debian\nroot (hd0,0)\n"
        "kernel /boot/vmlinuz root=/dev/xvda2 ro\ninitrd /boot/initrd.img\n")
    assert default == "0"
    assert (entries[0].kernel, entries[0].args, entries[0].initrd) == \
        ("/boot/vmlinuz", "root=/dev/xvda2 ro", ["/boot/initrd.img"])


def test_partition_offsets_mbr():
    head = bytearray(34 * 512)
    struct.pack_into("<BxxxBxxxII", head, 446, 0x00, 0x82, 2048, 1000)      # swap
    struct.pack_into("<BxxxBxxxII", head, 462, 0x80, 0x83, 4096, 10000)     # Linux
    head[510:512] = b"\x55\xaa"
    assert partition_offsets(bytes(head)) == [4096 * 512, 2048 * 512]
    assert partition_offsets(bytes(34 * 512)) == []


@pytest.fixture
def guest_fs(tmp_path):
    """A root tree with /boot (a symlink too) and grub.cfg; make(image, ...) puts it in ext4."""
    root = tmp_path / "root"
    (root / "boot/grub").mkdir(parents=True)
    (root / "boot/vmlinuz-6.1.0-9").write_bytes(b"KERNEL-NEW" * 100)
    (root / "boot/initrd.img-6.1.0-9").write_bytes(b"INITRD-NEW")
    (root / "boot/vmlinuz-old").write_bytes(b"KERNEL-OLD")
    (root / "boot/initrd.img-old").write_bytes(b"INITRD-OLD")
    (root / "boot/extra.img").write_bytes(b"+EXTRA")
    (root / "boot/grub/grub.cfg").write_text(GRUB_CFG)
    os.symlink("boot/vmlinuz-6.1.0-9", root / "vmlinuz")

    def make(image: Path, size_mb: int = 16) -> Path:
        with open(image, "wb") as f:
            f.truncate(size_mb << 20)
        subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(root), str(image)],
                       check=True)
        return image
    return make


def cfg_for(image, fmt="raw", extra_lines=""):
    return DomainConfig.from_text(
        f'name="g"\nbootloader="pygrub"\nextra="console=hvc0"\n'
        f"disk=['format={fmt}, vdev=xvda, target={image}']\n{extra_lines}")


def boot(cfg):
    b = run_bootloader(cfg)
    try:
        return (Path(b.kernel).read_bytes(), b.ramdisk and Path(b.ramdisk).read_bytes(),
                b.cmdline, b.title)
    finally:
        b.cleanup()
        assert not os.path.exists(os.path.dirname(b.kernel))


def test_pygrub_default_entry(guest_fs, tmp_path):
    img = guest_fs(tmp_path / "disk.img")
    kernel, ramdisk, cmdline, title = boot(cfg_for(img))
    # default=1: the submenu's entry; two initrds concatenated; extra= appended
    assert (kernel, ramdisk, title) == (b"KERNEL-OLD", b"INITRD-OLD+EXTRA", "Debian, recovery")
    assert cmdline == "root=/dev/xvda ro single console=hvc0"


def test_pygrub_entry_and_kernel_arguments(guest_fs, tmp_path):
    img = guest_fs(tmp_path / "disk.img")
    kernel, ramdisk, cmdline, _ = boot(cfg_for(img, extra_lines='bootloader_args=["--entry=0"]'))
    assert (kernel[:10], ramdisk) == (b"KERNEL-NEW", b"INITRD-NEW")
    assert cmdline == "root=/dev/xvda ro quiet console=hvc0"
    # kernel= beside a bootloader is a path inside the guest (a symlink here)
    kernel, ramdisk, cmdline, _ = boot(cfg_for(img, extra_lines='kernel="/vmlinuz"'))
    assert (kernel[:10], ramdisk, cmdline) == (b"KERNEL-NEW", None, "console=hvc0")


def test_pygrub_partitioned_and_qcow2(guest_fs, tmp_path):
    part = guest_fs(tmp_path / "part.img")
    disk = tmp_path / "disk.img"
    head = bytearray(1 << 20)
    struct.pack_into("<BxxxBxxxII", head, 446, 0x80, 0x83, 2048, part.stat().st_size // 512)
    head[510:512] = b"\x55\xaa"
    with open(disk, "wb") as f:
        f.write(head)
        f.write(part.read_bytes())
    assert boot(cfg_for(disk))[0] == b"KERNEL-OLD"
    q = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(part), str(q)], check=True)
    assert boot(cfg_for(q, "qcow2"))[1] == b"INITRD-OLD+EXTRA"


def test_pygrub_errors(tmp_path, guest_fs):
    blank = tmp_path / "blank.img"
    blank.write_bytes(bytes(1 << 20))
    with pytest.raises(BootloaderError, match="no GRUB configuration"):
        run_bootloader(cfg_for(blank))
    img = guest_fs(tmp_path / "disk.img")
    with pytest.raises(BootloaderError, match="no boot entry 'Windows'"):
        run_bootloader(cfg_for(img, extra_lines='bootloader_args=["--entry=Windows"]'))
    with pytest.raises(BootloaderError, match="needs a disk"):
        run_bootloader(DomainConfig.from_text('name="g"\nbootloader="pygrub"'))
    # the builder says which bootloader failed, as a CreateError
    with pytest.raises(CreateError, match="bootloader pygrub: .*no GRUB"):
        load_boot_files(cfg_for(blank))


def test_external_bootloader_gets_libxls_arguments(tmp_path):
    script = tmp_path / "bl.sh"
    log = tmp_path / "argv"
    script.write_text(f"""#!/bin/sh
printf '%s\\n' "$@" > {log}
for a in "$@"; do case $a in --output=*) out=${{a#--output=}};; --output-directory=*) d=${{a#--output-directory=}};; esac; done
printf 'K' > $d/k; printf 'R' > $d/r
printf 'kernel %s\\0ramdisk %s\\0args root=/dev/xvda1 extra\\0' $d/k $d/r > $out
""")
    script.chmod(0o755)
    disk = tmp_path / "d.img"
    disk.write_bytes(b"")
    cfg = DomainConfig.from_text(
        f'name="g"\nbootloader="{script}"\nbootloader_args=["-q"]\nextra="x=1"\n'
        f"disk=['format=raw, vdev=xvda, target={disk}']\n")
    kernel, ramdisk, cmdline, _ = boot(cfg)
    assert (kernel, ramdisk, cmdline) == (b"K", b"R", "root=/dev/xvda1 extra")
    argv = log.read_text().splitlines()
    assert argv[0] == "--args=x=1" and argv[-2:] == ["-q", str(disk)]
    assert "--output-format=simple0" in argv
    with pytest.raises(BootloaderError, match="not an executable"):
        run_bootloader(DomainConfig.from_text(
            f'name="g"\nbootloader="grub"\ndisk=["format=raw, vdev=xvda, target={disk}"]'))


def test_create_images_grub_cfg_pygrub_and_pv_grub_entries():
    """create-image's grub.cfg: pygrub takes entry 0 (Debian's bzImage); the
    `if grub_platform = xen` default (PV GRUB's gzip ELF entry) is not taken."""
    from pyxen.toolstack.createimage import grub_cfg
    entries, default = parse_grub2(grub_cfg("6.1.0-9"))
    assert choose_entry(entries, default, None).kernel == "/boot/vmlinuz-6.1.0-9"
    assert entries[1].kernel == "/boot/vmlinux-6.1.0-9.gz"
    entries, default = parse_grub2("if [ x = y ]; then\n  set default=3\nfi\n"
                                   "menuentry a {\n linux /k\n}\n")
    assert default == "0" and [e.kernel for e in entries] == ["/k"]


@pytest.fixture(scope="session")
def xens_pygrub() -> str:
    """Xen 4.17's own pygrub (Debian's xen-utils-4.17, fetched by package name;
    its xenfsimage plug-ins come with libxenmisc4.17, which libxen-dev pulls in)."""
    from pyxen.build.fetch import FetchError, fetch_debian_package_file
    try:
        return str(fetch_debian_package_file("xen-utils-4.17", "usr/lib/xen-4.17/bin/pygrub",
                                             follow_depends=False))
    except FetchError as e:
        pytest.fail(f"Xen's pygrub unavailable (Debian package xen-utils-4.17): {e}")


#: What both pygrubs read alike: Xen's (4.17) neither substitutes GRUB
#: variables nor unquotes `set default="1"`, nor flattens submenus.
FLAT_CFG = """\
set default=1
menuentry 'Debian GNU/Linux' --class debian {
\tlinux (hd0,msdos1)/boot/vmlinuz-6.1.0-9 root=/dev/xvda ro quiet
\tinitrd /boot/initrd.img-6.1.0-9
}
menuentry "Debian, recovery" {
\tlinux /boot/vmlinuz-old root=/dev/xvda ro single
\tinitrd /boot/initrd.img-old
}
"""


@pytest.mark.parametrize("lines", [
    "",
    'bootloader_args=["--entry=0"]',
    'bootloader_args=["--entry=Debian GNU/Linux"]',
    'kernel="/vmlinux-for-xen"\nramdisk="/boot/initrd.img-old"',
])
def test_pyxens_pygrub_agrees_with_xens(xens_pygrub, guest_fs, tmp_path, lines):
    """The same disk, the same xl.cfg: Xen's pygrub (run as libxl runs a
    bootloader, through bootloader=PATH) and pyxen's take the same kernel,
    initrd and command line."""
    (tmp_path / "root" / "vmlinux-for-xen").symlink_to("boot/vmlinuz-6.1.0-9")
    (tmp_path / "root" / "boot/grub/grub.cfg").write_text(FLAT_CFG)
    img = guest_fs(tmp_path / "disk.img")
    ours = boot(cfg_for(img, extra_lines=lines))
    theirs = boot(DomainConfig.from_text(
        f'name="g"\nbootloader="{xens_pygrub}"\nextra="console=hvc0"\n'
        f"disk=['format=raw, vdev=xvda, target={img}']\n{lines}"))
    assert ours[:3] == theirs[:3]


def test_create_images_grub_cfg_with_xens_pygrub(xens_pygrub, tmp_path):
    """Xen's pygrub reads create-image's grub.cfg as pyxen's does: entry 0
    (its `if grub_platform = xen` line is not taken either)."""
    from pyxen.toolstack.createimage import grub_cfg
    root = tmp_path / "root"
    (root / "boot/grub").mkdir(parents=True)
    for f in ("vmlinuz-6.1.0-9", "initrd.img-6.1.0-9", "vmlinux-6.1.0-9.gz"):
        (root / "boot" / f).write_bytes(f.encode())
    (root / "boot/grub/grub.cfg").write_text(grub_cfg("6.1.0-9"))
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext4", "-d", str(root), str(img)], check=True)
    disk = f"disk=['format=raw, vdev=xvda, target={img}']\n"
    ours = boot(DomainConfig.from_text(f'name="g"\nbootloader="pygrub"\n{disk}'))
    theirs = boot(DomainConfig.from_text(f'name="g"\nbootloader="{xens_pygrub}"\n{disk}'))
    assert ours[:3] == theirs[:3] == (b"vmlinuz-6.1.0-9", b"initrd.img-6.1.0-9",
                                       "root=/dev/xvda ro console=hvc0 net.ifnames=0")
