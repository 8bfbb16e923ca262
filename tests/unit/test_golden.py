"""The output bytes of every format, codec, level and mode on synthetic vmcores are what they were when
tests/golden_hashes.json was recorded (see tests/golden.py). The synthetic vmcores are the same bytes on
every machine, so this runs everywhere; a change that alters output on purpose re-records the store."""
from __future__ import annotations

import sys

import pytest

from fixtures.synthetic import main as synth_main
from tests.golden import CASES, expected, run_cases, same_output

INPUTS = {
    "k61": ["--pages", "kernel61"],
    "k612": ["--pages", "kernel612"],
    "c32": ["--class", "32"],
    "packed": ["--layout", "packed", "--pages", "kernel61"],
}
PYDUMPFILE = [sys.executable, "-m", "dumpfilter"]


@pytest.mark.parametrize("name", list(INPUTS))
def test_synthetic_outputs_are_byte_identical(name, tmp_path):
    vm = tmp_path / f"synth-{name}.vmcore"
    synth_main([str(vm), *INPUTS[name]])
    want = expected(str(vm))
    assert want is not None, f"the synthetic vmcore {name} is not the one the hashes were recorded for"
    assert set(want) == set(CASES)
    got = run_cases(PYDUMPFILE, str(vm), tmp_path)
    differ = {k: (got.get(k), want[k]) for k in want if not same_output(got.get(k, "missing"), want[k])}
    assert not differ, f"outputs changed: {differ}"
    assert any(not v.startswith("exit") for v in got.values())
