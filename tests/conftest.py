"""Shared fixtures: synthetic vmcores (fast, made by fixtures/synthetic.py) and real ones (fixtures/realcore:
Debian kernels crashed under QEMU and captured by a kdump kernel, cached outside git in
$PYDUMPFILE_CACHE/realcore, default ~/.cache/pydumpfile).

Every test under tests/real/, and every test anywhere that uses a real vmcore, is marked ``real``
(``-m "not real"`` runs the fast part alone)."""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))  # repo root: `fixtures`, `dumpfilter`

import pytest  # noqa: E402

from fixtures.realcore_lib import build  # noqa: E402
from fixtures.synthetic import SynthInfo, SynthSpec, generate  # noqa: E402

REAL_DIR = pathlib.Path(__file__).resolve().parent / "real"
REAL_FIXTURES = {"realcore", "core_61", "core_612", "core_7x", "core_qemu_61", "core_arm64_61", "core_arm64_612",
                 "core_arm64_612_48", "core_arm64_7x", "core_arm64_612_16k"}


def _is_real(item: pytest.Item) -> bool:
    path = pathlib.Path(str(item.fspath)).resolve()
    return (REAL_DIR in path.parents  # tests on real vmcores
            or path.name.startswith("test_realcore")  # tests of the real-vmcore builder itself
            or bool(REAL_FIXTURES & set(getattr(item, "fixturenames", ()))))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _is_real(item):
            item.add_marker(pytest.mark.real)


# --- synthetic vmcores -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> SynthInfo:
    """A 64 MiB mixed-content x86_64 vmcore with two CPUs and a partial last page."""
    path = tmp_path_factory.mktemp("synth") / "vmcore"
    return generate(path, SynthSpec())


@pytest.fixture(scope="session")
def synth_novmci(tmp_path_factory) -> SynthInfo:
    path = tmp_path_factory.mktemp("synth") / "vmcore-novmcoreinfo"
    return generate(path, SynthSpec(vmcoreinfo=False, ram=[(0x1000, 0x9FC00), (0x100000, 0x1000000)]))


# --- real vmcores (built once per machine, cached) -------------------------------------------------


@pytest.fixture(scope="session")
def realcore():
    """Factory: realcore(kernel, flavour='cloud', mem_mb=1024, crashkernel='256M',
    workload_mb=160, producer='kdump', arch='x86_64', cpu=None) -> Path of the cached
    fixture DIR (cpu: arm64 only, QEMU's -cpu, default 'max')."""
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


# arm64 (qemu-system-aarch64 -M virt, TCG).  -cpu max has FEAT_LPA2: 6.12+ kernels
# (CONFIG_ARM64_VA_BITS=52, LPA2) run with 52-bit VA; lpa2=off makes the same kernel
# run with 48-bit VA.  6.1 is a 48-bit VA build.
@pytest.fixture(scope="session")
def core_arm64_61(realcore):
    return realcore("6.1", arch="arm64")


@pytest.fixture(scope="session")
def core_arm64_612(realcore):
    return realcore("6.12", arch="arm64", cpu="max")


@pytest.fixture(scope="session")
def core_arm64_612_48(realcore):
    return realcore("6.12", arch="arm64", cpu="max,lpa2=off")


@pytest.fixture(scope="session")
def core_arm64_7x(realcore):
    return realcore("7.x", arch="arm64")


@pytest.fixture(scope="session")
def core_arm64_612_16k(realcore):
    return realcore("6.12", arch="arm64", flavour="16k")
