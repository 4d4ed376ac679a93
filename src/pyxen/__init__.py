"""pyxen: the Xen virtualization system rebuilt in Python on Linux KVM."""
