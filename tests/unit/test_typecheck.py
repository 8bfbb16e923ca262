"""The package type-checks (mypy, configured in pyproject.toml) with the stubs of its Cython modules and
without a single ``type: ignore``."""
from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_mypy_is_clean():
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-1000:]
    assert "Success" in r.stdout


def test_no_type_ignore_and_every_cython_module_has_a_stub():
    pkg = ROOT / "dumpfilter"
    ignores = [f"{p}:{i}" for p in pkg.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
               if "type: ignore" in line]
    assert not ignores
    pyx = {p.stem for p in (pkg / "_speedups").glob("*.pyx")}
    pyi = {p.stem for p in (pkg / "_speedups").glob("*.pyi")}
    assert pyx and pyx <= pyi, f"no stub for {sorted(pyx - pyi)}"
