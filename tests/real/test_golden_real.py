"""The output bytes on the real vmcores are what they were when tests/golden_hashes.json was recorded
(tests/golden.py): every codec at -d 0/1/31, threads, cyclic, --non-mmap, -E, -F, refiltering,
--dump-dmesg and --mem-usage. The store is keyed by the vmcore's sha256, so a vmcore built anew on
another machine (a different crash) has nothing to compare with and the test says so."""
from __future__ import annotations

import sys

import pytest

from tests.golden import expected, run_cases, same_output

PYDUMPFILE = [sys.executable, "-m", "dumpfilter"]


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.x"])
def test_real_outputs_are_byte_identical(realcore, kernel, tmp_path):
    vm = str(realcore(kernel) / "vmcore")
    want = expected(vm)
    if want is None:
        pytest.skip(f"no recorded hashes for this {kernel} vmcore (it was built on another machine)")
    got = run_cases(PYDUMPFILE, vm, tmp_path)
    differ = {k: (got.get(k), want[k]) for k in want if not same_output(got.get(k, "missing"), want[k])}
    assert not differ, f"outputs changed: {differ}"
