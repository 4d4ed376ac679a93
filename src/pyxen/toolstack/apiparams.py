"""Checking the parameters of a pyxend API request before its handler runs.

Every request of the API is listed in pyxen.toolstack.api with its
parameters, each a `Param` of a declared type; check_params() holds a
request's `params` object against them: no unknown or missing parameter,
and each value of the declared JSON type (int is never bool, str has no NUL
and a bounded length, lists hold the declared items), within the bounds
given with Annotated[..., Range()] or Annotated[str, MaxLen()]. Anything
else is refused with EINVAL before the handler sees it, so no handler works
on a value of a type it did not expect (a name that is an object, a count
that is a string, a list where a string belongs).
"""
from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Annotated, Union

MAX_STR = 4096


class ParamError(Exception):
    """A request's parameters do not fit the request: EINVAL."""


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: the default of a parameter that must be given
REQUIRED = _Required()


@dataclass(frozen=True)
class Param:
    """One parameter of an API request: its name on the wire, its type (a
    typing hint of JSON types, with Range/MaxLen bounds; typing.Any for any
    string or number) and its default (REQUIRED: none)."""
    name: str
    type: object
    default: object = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Range:
    lo: int
    hi: int


@dataclass(frozen=True)
class MaxLen:
    n: int


#: a domain, by id or by name (the daemon's find() decides which exists)
DomRef = Annotated[Union[int, str], Range(0, 0x7FEF), MaxLen(256)]
#: a domain id of a domU
DomId = Annotated[int, Range(1, 0x7FEF)]

_SCALARS = (str, int, bool, type(None))


def _check(value, hint, where: str) -> None:
    meta: tuple = ()
    if typing.get_origin(hint) is Annotated:
        hint, *meta = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        errors = []
        for alt in typing.get_args(hint):
            try:
                _check(value, Annotated[(alt, *meta)] if meta else alt, where)
                return
            except ParamError as e:
                errors.append((alt, str(e)))
        # the alternative of the value's own type says best what is wrong
        for alt, msg in errors:
            if _of_type(value, alt):
                raise ParamError(msg)
        raise ParamError(f"{where}: {_show(value)} is not a valid value")
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise ParamError(f"{where} must be a list, got {_json_type(value)}")
        args = typing.get_args(hint)
        item = args[0] if args else typing.Any
        if len(value) > 4096:
            raise ParamError(f"{where}: too many entries ({len(value)})")
        for i, v in enumerate(value):
            _check(v, item, f"{where}[{i}]")
        return
    if hint is typing.Any:
        if not isinstance(value, _SCALARS):
            raise ParamError(f"{where} must be a string or a number, got {_json_type(value)}")
        if isinstance(value, str):
            _check_str(value, MAX_STR, where)
        return
    if hint is type(None) or hint is None:
        if value is not None:
            raise ParamError(f"{where} must be null, got {_json_type(value)}")
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamError(f"{where} must be true or false, got {_json_type(value)}")
        return
    if hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ParamError(f"{where} must be an integer, got {_json_type(value)}")
        for m in meta:
            if isinstance(m, Range) and not m.lo <= value <= m.hi:
                raise ParamError(f"{where} must be {m.lo}..{m.hi}, got {value}")
        return
    if hint is str:
        if not isinstance(value, str):
            raise ParamError(f"{where} must be a string, got {_json_type(value)}")
        limit = next((m.n for m in meta if isinstance(m, MaxLen)), MAX_STR)
        _check_str(value, limit, where)
        return
    raise ParamError(f"{where}: cannot check a {hint!r} parameter")    # a daemon bug


def _of_type(value, hint) -> bool:
    """Whether value has the JSON type hint stands for (bounds aside)."""
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_of_type(value, a) for a in typing.get_args(hint))
    base = origin or hint
    if base is None:
        base = type(None)
    if base is tuple:
        base = list
    return isinstance(base, type) and isinstance(value, base) and \
        not (isinstance(value, bool) and base is int)


def _check_str(value: str, limit: int, where: str) -> None:
    if len(value) > limit:
        raise ParamError(f"{where} is too long ({len(value)} characters, max {limit})")
    if "\0" in value:
        raise ParamError(f"{where} must not contain NUL")


def _json_type(v) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _show(v) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def check_params(spec, params, method: str) -> None:
    """Raise ParamError unless `params` (a request's "params") fits `spec`,
    the request's sequence of Param."""
    if not isinstance(params, dict):
        raise ParamError(f"{method}: params must be an object, got {_json_type(params)}")
    names = {p.name for p in spec}
    unknown = sorted(set(params) - names)
    if unknown:
        raise ParamError(f"{method}: unknown parameter{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(_show, unknown))}")
    for p in spec:
        if p.name not in params:
            if p.required:
                raise ParamError(f"{method}: parameter {p.name!r} is missing")
            continue
        _check(params[p.name], p.type, f"{method}: {p.name}")


def describe_type(hint) -> str:
    """A parameter type as the API documentation shows it."""
    if hint == DomRef:
        return "dom"
    meta: tuple = ()
    if typing.get_origin(hint) is Annotated:
        hint, *meta = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        alts = typing.get_args(hint)
        return "|".join(describe_type(Annotated[(a, *meta)] if meta else a) for a in alts)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        return f"[{describe_type(args[0]) if args else 'scalar'}]"
    if hint is typing.Any:
        return "scalar"
    if hint is type(None) or hint is None:
        return "null"
    name = getattr(hint, "__name__", repr(hint))
    for m in meta:
        if isinstance(m, Range) and hint is int:
            name += f" {m.lo}..{m.hi}"
        if isinstance(m, MaxLen) and hint is str:
            name += f" (<= {m.n} chars)"
    return name
