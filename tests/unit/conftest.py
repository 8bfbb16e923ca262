from __future__ import annotations

import pytest

from fixtures.synthetic import SynthInfo, SynthSpec, generate


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> SynthInfo:
    """A 64 MiB mixed-content x86_64 vmcore with two CPUs and a partial last page."""
    path = tmp_path_factory.mktemp("synth") / "vmcore"
    return generate(path, SynthSpec())


@pytest.fixture(scope="session")
def synth_novmci(tmp_path_factory) -> SynthInfo:
    path = tmp_path_factory.mktemp("synth") / "vmcore-novmcoreinfo"
    return generate(path, SynthSpec(vmcoreinfo=False, ram=[(0x1000, 0x9FC00), (0x100000, 0x1000000)]))
