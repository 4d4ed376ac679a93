"""xen/include/public/version.h: xen_version commands."""
from __future__ import annotations

_HEADER = "xen/version.h"

XENVER_version, XENVER_extraversion, XENVER_compile_info, XENVER_capabilities = 0, 1, 2, 3
XENVER_changeset, XENVER_platform_parameters, XENVER_get_features = 4, 5, 6
XENVER_pagesize, XENVER_guest_handle, XENVER_commandline, XENVER_build_id = 7, 8, 9, 10
