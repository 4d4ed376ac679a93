"""xen/include/public/io/netif.h: network tx/rx ring requests and responses."""
from __future__ import annotations

from ._types import Struct, u8, u16, i16, grant_ref_t

_HEADER = "xen/io/netif.h"

NETTXF_csum_blank, NETTXF_data_validated, NETTXF_more_data, NETTXF_extra_info = 1, 2, 4, 8
NETRXF_data_validated, NETRXF_csum_blank, NETRXF_more_data = 1, 2, 4
NETRXF_extra_info, NETRXF_gso_prefix = 8, 16
XEN_NETIF_EXTRA_TYPE_NONE, XEN_NETIF_EXTRA_TYPE_GSO = 0, 1
XEN_NETIF_EXTRA_TYPE_MCAST_ADD, XEN_NETIF_EXTRA_TYPE_MCAST_DEL = 2, 3
XEN_NETIF_EXTRA_FLAG_MORE = 1
XEN_NETIF_GSO_TYPE_NONE, XEN_NETIF_GSO_TYPE_TCPV4, XEN_NETIF_GSO_TYPE_TCPV6 = 0, 1, 2
NETIF_RSP_DROPPED, NETIF_RSP_ERROR, NETIF_RSP_OKAY, NETIF_RSP_NULL = -2, -1, 0, 1


class NetifTxRequest(Struct):
    _c_type_ = "struct netif_tx_request"
    _fields_ = [("gref", grant_ref_t), ("offset", u16), ("flags", u16), ("id", u16),
                ("size", u16)]


class NetifTxResponse(Struct):
    _c_type_ = "struct netif_tx_response"
    _fields_ = [("id", u16), ("status", i16)]


class NetifRxRequest(Struct):
    _c_type_ = "struct netif_rx_request"
    _fields_ = [("id", u16), ("pad", u16), ("gref", grant_ref_t)]


class NetifRxResponse(Struct):
    _c_type_ = "struct netif_rx_response"
    _fields_ = [("id", u16), ("offset", u16), ("flags", u16), ("status", i16)]


class NetifExtraInfoGso(Struct):
    """netif_extra_info with its gso arm (the one pyxen reads)."""
    _c_type_ = "struct netif_extra_info"
    _c_names_ = {"gso_size": "u.gso.size", "gso_type": "u.gso.type", "gso_pad": "u.gso.pad",
                 "gso_features": "u.gso.features"}
    _fields_ = [("type", u8), ("flags", u8), ("gso_size", u16), ("gso_type", u8),
                ("gso_pad", u8), ("gso_features", u16)]
