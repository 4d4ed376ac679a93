"""Domain building: guest kernel images (ELF/bzImage), Xen notes, initramfs archives.

Main entry points::

    from pyxen.build.elf import load_kernel, KernelImage, LoadSegment
    from pyxen.build.bzimage import extract_payload
    from pyxen.build.cpio import CpioWriter
    from pyxen.build.errors import KernelImageError
    from pyxen.build.fetch import fetch_debian_package_file
"""
