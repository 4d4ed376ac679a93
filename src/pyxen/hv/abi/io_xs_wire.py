"""xen/include/public/io/xs_wire.h: xenstore message header, message types,
errors and the xenstore ring page."""
from __future__ import annotations

from ._types import Struct, char, u32

_HEADER = "xen/io/xs_wire.h"

XS_CONTROL, XS_DIRECTORY, XS_READ, XS_GET_PERMS, XS_WATCH, XS_UNWATCH = 0, 1, 2, 3, 4, 5
XS_TRANSACTION_START, XS_TRANSACTION_END, XS_INTRODUCE, XS_RELEASE = 6, 7, 8, 9
XS_GET_DOMAIN_PATH, XS_WRITE, XS_MKDIR, XS_RM, XS_SET_PERMS = 10, 11, 12, 13, 14
XS_WATCH_EVENT, XS_ERROR, XS_IS_DOMAIN_INTRODUCED, XS_RESUME = 15, 16, 17, 18
XS_SET_TARGET, XS_RESET_WATCHES, XS_DIRECTORY_PART = 19, 21, 22
XS_TYPE_COUNT, XS_INVALID = 23, 0xFFFF
XS_DEBUG = XS_CONTROL

XENSTORE_RING_SIZE = 1024
XENSTORE_PAYLOAD_MAX = 4096
XENSTORE_ABS_PATH_MAX, XENSTORE_REL_PATH_MAX = 3072, 2048
XENSTORE_SERVER_FEATURE_RECONNECTION = 1
XENSTORE_SERVER_FEATURE_ERROR = 2
XENSTORE_CONNECTED, XENSTORE_RECONNECT = 0, 1
XENSTORE_ERROR_NONE, XENSTORE_ERROR_COMM = 0, 1
XENSTORE_ERROR_RINGIDX, XENSTORE_ERROR_PROTO = 2, 3

#: the errno names an XS_ERROR reply may carry, in xsd_errors[] order
XSD_ERRORS = ("EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO",
              "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG", "EPERM")


class XsdSockmsg(Struct):
    _c_type_ = "struct xsd_sockmsg"
    _fields_ = [("type", u32), ("req_id", u32), ("tx_id", u32), ("len", u32)]


class XenstoreDomainInterface(Struct):
    _c_type_ = "struct xenstore_domain_interface"
    _fields_ = [("req", char * XENSTORE_RING_SIZE), ("rsp", char * XENSTORE_RING_SIZE),
                ("req_cons", u32), ("req_prod", u32), ("rsp_cons", u32), ("rsp_prod", u32),
                ("server_features", u32), ("connection", u32), ("error", u32)]
