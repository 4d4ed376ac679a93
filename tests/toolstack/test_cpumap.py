"""xl's cpumaps for cpus= / cpus_soft= per vCPU (toolstack/cpumap.py)."""
from __future__ import annotations

import pytest

from pyxen.toolstack.cpumap import CpumapError, vcpu_affinities


def test_one_map_for_every_vcpu_or_one_each():
    assert vcpu_affinities(None, 2, 4) == [None, None]
    assert vcpu_affinities("1-2", 3, 4) == [{1, 2}] * 3
    assert vcpu_affinities("all,^0", 1, 4) == [{1, 2, 3}]
    assert vcpu_affinities(["0", "3"], 3, 4) == [{0}, {3}, None]     # past the list: any CPU
    assert vcpu_affinities(["0", "1", "2"], 2, 4) == [{0}, {1}]
    assert vcpu_affinities("2-9", 1, 4) == [{2, 3}]                 # CPUs the host lacks dropped


def test_a_map_without_a_host_cpu_is_refused():
    with pytest.raises(CpumapError, match=r"vcpu 1: its CPU map names no CPU \(of 4\)"):
        vcpu_affinities(["0", "7"], 2, 4)
    with pytest.raises(CpumapError, match="Invalid pcpu range: 3-1."):
        vcpu_affinities("3-1", 1, 4)
