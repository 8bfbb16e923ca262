"""The long fuzzing run (see README.md here): every property-based test of tests/unit/test_properties*.py
with PYDUMPFILE_FUZZ_EXAMPLES random examples each, instead of the few derandomized ones CI runs.
Skipped unless that variable is set, so the default ``python -m pytest -q`` never runs it."""
from __future__ import annotations

import importlib
import os

import pytest

if not os.environ.get("PYDUMPFILE_FUZZ_EXAMPLES"):
    pytest.skip("the long fuzzing run: set PYDUMPFILE_FUZZ_EXAMPLES=N (tests/fuzz/README.md)", allow_module_level=True)

TARGETS = ["elf", "kdump", "printk", "kexec"]  # tests/unit/test_properties_<target>.py

for _target in TARGETS:
    _mod = importlib.import_module(f"tests.unit.test_properties_{_target}")
    for _name, _obj in vars(_mod).items():
        if _name.startswith("test_"):
            if hasattr(_obj, "hypothesis"):  # the properties, not the plain regression tests
                globals()[f"test_{_target}_{_name[5:]}"] = _obj
        elif not _name.startswith("_") and _name not in globals():
            globals()[_name] = _obj  # the module's fixtures and helpers
