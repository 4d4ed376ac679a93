"""pyxen: the Xen virtualization system rebuilt in Python on Linux KVM."""
__version__ = "0.1.0"
