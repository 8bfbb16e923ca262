"""Real vmcores built by fixtures/realcore (Debian kernels under QEMU), cached outside git.

The cache is $PYDUMPFILE_CACHE/realcore (default ~/.cache/pydumpfile/realcore); a fixture
DIR is built once per (kernel, parameters, package version, guest sources) and reused.
"""
from __future__ import annotations

import pytest

from fixtures.realcore_lib import build


@pytest.fixture(scope="session")
def realcore():
    """Factory: realcore(kernel, flavour='cloud', mem_mb=1024, crashkernel='256M',
    workload_mb=160, producer='kdump') -> Path of the cached fixture DIR."""
    def make(kernel: str, **kw):
        return build(kernel, **kw)
    return make


@pytest.fixture(scope="session")
def core_61(realcore):
    return realcore("6.1")


@pytest.fixture(scope="session")
def core_612(realcore):
    return realcore("6.12")


@pytest.fixture(scope="session")
def core_7x(realcore):
    return realcore("7.x")


@pytest.fixture(scope="session")
def core_qemu_61(realcore):
    return realcore("6.1", producer="qemu")
