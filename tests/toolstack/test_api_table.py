"""pyxend's table of API requests (toolstack/api.py) and the registry of
PV device kinds (toolstack/devkinds.py), checked without a daemon: every
handler is in the table and every request has a handler that takes its
parameters, every request is documented, every device kind has its requests,
xl commands, backend and config key, and DomainDevices.attach_config attaches
what a config lists."""
from __future__ import annotations

import inspect
import re
from types import SimpleNamespace

import pytest

from pyxen.cli import build_parser
from pyxen.toolstack import api, daemon
from pyxen.toolstack.apiparams import REQUIRED, ParamError
from pyxen.toolstack.devices import DeviceConfigError, DomainDevices
from pyxen.toolstack.devkinds import DEVICE_KINDS
from pyxen.toolstack.domconfig import SUPPORTED_KEYS, DomainConfig


def test_every_api_handler_is_in_the_table():
    handlers = {r.handler for r in api.REQUESTS.values()}
    for name in dir(daemon.Daemon):
        if name.startswith("api_"):
            assert name in handlers, f"Daemon.{name} is not in toolstack/api.py's table"
            assert name[4:] in api.REQUESTS and api.REQUESTS[name[4:]].handler == name


@pytest.mark.parametrize("name", list(api.REQUESTS))
def test_every_request_has_a_handler_that_takes_its_parameters(name):
    r = api.REQUESTS[name]
    fn = getattr(daemon.Daemon, r.handler, None)
    assert callable(fn), f"{name}: no Daemon.{r.handler}"
    if r.stream:
        assert list(inspect.signature(fn).parameters)[1:] == ["conn", "rid", "params"]
        return
    params = list(inspect.signature(fn).parameters.values())[1:]     # after self
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    n = len(r.args) + len(r.params)
    assert len(positional) >= n, (name, positional)
    assert all(p.default is not p.empty for p in positional[n:]), (name, positional)
    if r.handler == "api_" + name:
        # its own handler names its parameters as the wire does
        assert [p.name for p in positional] == [p.name for p in r.params]


def test_every_request_is_documented():
    doc = daemon.__doc__
    assert "version" in doc and "API_VERSION 1" in doc
    for r in api.REQUESTS.values():
        assert r.doc.strip() and r.returns.strip(), r.name
        assert f"\n  {r.name} " in doc, f"{r.name} is not in daemon.__doc__"
        entry = re.split(r"\n  (?! )", doc.split(f"\n  {r.name} ", 1)[1], maxsplit=1)[0]
        for p in r.params:
            assert f"{p.name}{'' if p.required else '?'}: " in entry, (r.name, p.name)


def test_the_table_checks_parameters():
    r = api.REQUESTS["mem_set"]
    r.check({"dom": "x", "kb": 512})
    for params, msg in [({"dom": "x"}, "mem_set: parameter 'kb' is missing"),
                        ({"dom": "x", "kb": 1, "z": 1}, "mem_set: unknown parameter 'z'"),
                        ({"dom": "x", "kb": True}, "mem_set: kb must be an integer, got a boolean"),
                        ({"dom": "x", "kb": -1}, "mem_set: kb must be 0..1073741824, got -1"),
                        ([1], "mem_set: params must be an object, got a list")]:
        with pytest.raises(ParamError) as e:
            r.check(params)
        assert str(e.value) == msg
    assert api.REQUESTS["log"].arguments({}) == [100]
    assert api.REQUESTS["sched_credit"].arguments({"cap": 5}) == [None, None, 5]
    assert "console" in api.REQUESTS and api.REQUESTS["console"].stream


def test_every_device_kind_has_requests_commands_backend_and_config_key():
    sub = next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices
               and "create" in a.choices).choices
    for kind in DEVICE_KINDS:
        for op in ("attach", "detach", "list"):
            r = api.REQUESTS[f"{kind.verb}_{op}"]
            assert r.args == (kind,) and r.handler == f"_device_{op}"
            assert f"{kind.verb}-{op}" in sub
        assert api.REQUESTS[f"{kind.verb}_detach"].params[1].name == kind.target_param
        assert kind.backend_class().kind == kind.type
        assert DomainConfig(name="x").devices[kind.config_key] == []
        assert kind.config_key in SUPPORTED_KEYS
    assert [p.default for p in api.REQUESTS["block_attach"].params[2:]] == [False, None]
    assert all(p.default is REQUIRED for p in api.REQUESTS["network_attach"].params)


def test_attach_config_attaches_every_device_of_the_config(tmp_path, monkeypatch):
    cfg = DomainConfig(name="web", source=str(tmp_path / "web.cfg"), devices={
        "disk": ["format=raw, vdev=xvda, target=root.img",
                 "format=raw, vdev=xvdb, access=ro, target=/srv/data.img"],
        "vif": ["bridge=xenbr0", "mac=00:16:3e:00:00:01"]})
    devs = DomainDevices(None, SimpleNamespace(domid=5))
    got = []
    monkeypatch.setattr(devs, "attach", lambda kind, spec, force=False: got.append(spec))
    devs.attach_config(cfg)
    assert [getattr(s, "target", None) for s in got[:2]] == [str(tmp_path / "root.img"),
                                                              "/srv/data.img"]
    assert [(s.devid, s.mac) for s in got[2:]] == [(0, cfg.vif_specs()[0].mac),
                                                   (1, "00:16:3e:00:00:01")]
    got.clear()
    devs.attach_config(cfg, base_dir="/elsewhere")
    assert got[0].target == "/elsewhere/root.img"
    bad = DomainConfig(name="web", devices={"disk": ["vdev=xvd!, target=/x"]})
    with pytest.raises(DeviceConfigError, match="bad vdev"):
        devs.attach_config(bad)
