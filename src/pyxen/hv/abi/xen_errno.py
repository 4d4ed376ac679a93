"""xen/include/public/errno.h: the errno values Xen returns (negated).
Xen names them XEN_<name>; ETIME_ and EALREADY_ carry a trailing _ in
pyxen (not to shadow the errno module's names where both are imported)."""
from __future__ import annotations

import errno as _errno

_HEADER = "xen/errno.h"
_C_PREFIX = "XEN_"

EPERM, ENOENT, ESRCH, EINTR, EIO, ENXIO, E2BIG = 1, 2, 3, 4, 5, 6, 7
EBADF, EAGAIN, ENOMEM, EACCES, EFAULT, EBUSY, EEXIST = 9, 11, 12, 13, 14, 16, 17
EXDEV, ENODEV, EINVAL, ENOSPC, ERANGE, ENOSYS, EOPNOTSUPP = 18, 19, 22, 28, 34, 38, 95
EILSEQ = 84
ETIME_, EALREADY_ = 62, 114
assert EINVAL == _errno.EINVAL and ENOSYS == _errno.ENOSYS and EFAULT == _errno.EFAULT
