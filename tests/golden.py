"""Output bytes pinned by hash: the same command lines on the same input must give the same files.

A *case* is one pydumpfile command line over one input (``{vmcore}``), writing ``{out}`` (or its
standard output, for ``-F`` and ``--mem-usage``). ``record`` runs every case with a given pydumpfile and
stores ``sha256`` of each output in ``tests/golden_hashes.json`` under the input's fingerprint, so a
later pydumpfile can be held to exactly those bytes (tests/unit/test_golden.py on the deterministic
synthetic vmcores, tests/real/test_golden.py on the cached real ones).

Record (before a change that must not alter output), with the pydumpfile to pin:

    python -m tests.golden record --pydumpfile .venv/bin/pydumpfile VMCORE [VMCORE ...]

The store is keyed by the input's sha256, so a real vmcore built anew (a different crash) has no
recorded hashes and its test is skipped; the synthetic vmcores are the same bytes on every machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

STORE = Path(__file__).with_name("golden_hashes.json")

CODECS = {"zlib": "-c", "lzo": "-l", "snappy": "-p", "zstd": "-z"}

# name -> (arguments, where the output is: "file" or "stdout"); {vmcore}, {out}, {prev:NAME} (the output
# file of an earlier case, for refiltering) are substituted
CASES: dict[str, tuple[list[str], str]] = {}
for _codec, _flag in CODECS.items():
    for _level in (0, 1, 31):
        CASES[f"{_codec}-d{_level}"] = ([_flag, "-d", str(_level), "{vmcore}", "{out}"], "file")
CASES.update({
    "lzo-d1-threads2": (["-l", "-d", "1", "--num-threads", "2", "{vmcore}", "{out}"], "file"),
    "lzo-d31-cyclic": (["-l", "-d", "31", "--cyclic-buffer", "1", "{vmcore}", "{out}"], "file"),
    "lzo-d31-nonmmap": (["-l", "-d", "31", "--non-mmap", "{vmcore}", "{out}"], "file"),
    "elf-d31": (["-E", "-d", "31", "{vmcore}", "{out}"], "file"),
    "flat-lzo-d31": (["-F", "-l", "-d", "31", "{vmcore}"], "stdout"),
    "flat-elf-d31": (["-F", "-E", "-d", "31", "{vmcore}"], "stdout"),
    "refilter-lzo-d31": (["-l", "-d", "31", "{prev:lzo-d1}", "{out}"], "file"),
    "refilter-zstd-d31-from-zlib": (["-z", "-d", "31", "{prev:zlib-d0}", "{out}"], "file"),
    "refilter-from-flat": (["-c", "-d", "31", "{prev:flat-lzo-d31}", "{out}"], "file"),
    "dmesg": (["--dump-dmesg", "{vmcore}", "{out}"], "file"),
    "mem-usage": (["--mem-usage", "{vmcore}"], "stdout"),
})


def fingerprint(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _sha(path: Path) -> str:
    return fingerprint(path)


def run_cases(pydumpfile: list[str], vmcore: str, workdir: Path, names: list[str] | None = None,
              env: dict[str, str] | None = None) -> dict[str, str]:
    """Run the cases (all, or ``names`` and what they depend on) and return {name: sha256 or 'exit N: …'}."""
    names = list(CASES) if names is None else names
    need: list[str] = []

    def add(n: str) -> None:
        for a in CASES[n][0]:
            if a.startswith("{prev:"):
                add(a[6:-1])
        if n not in need:
            need.append(n)

    for n in names:
        add(n)
    outs: dict[str, Path] = {}
    result: dict[str, str] = {}
    for name in need:
        args, where = CASES[name]
        out = workdir / f"{name}.out"
        if out.exists():
            out.unlink()
        argv = []
        for a in args:
            if a == "{vmcore}":
                argv.append(vmcore)
            elif a == "{out}":
                argv.append(str(out))
            elif a.startswith("{prev:"):
                argv.append(str(outs[a[6:-1]]))
            else:
                argv.append(a)
        if where == "stdout":
            with open(out, "wb") as f:
                r = subprocess.run(pydumpfile + argv, stdout=f, stderr=subprocess.PIPE, env=env, timeout=900)
        else:
            r = subprocess.run(pydumpfile + argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                               timeout=900)
        outs[name] = out
        if r.returncode != 0:
            result[name] = f"exit {r.returncode}: {r.stderr.decode(errors='replace').strip()[-300:]}"
        else:
            result[name] = _sha(out)
    for name in need:
        if name not in names:
            result.pop(name, None)
    for p in outs.values():
        try:
            p.unlink()
        except OSError:
            pass
    return result


def same_output(got: str, want: str) -> bool:
    """A recorded output hash must match exactly; a case that failed must fail with the same exit code
    (its message may be reworded)."""
    if want.startswith("exit "):
        return got.split(":", 1)[0] == want.split(":", 1)[0]
    return got == want


def load_store() -> dict[str, dict[str, object]]:
    if STORE.exists():
        return json.loads(STORE.read_text())
    return {}


def expected(vmcore: str) -> dict[str, str] | None:
    entry = load_store().get(fingerprint(vmcore))
    return None if entry is None else dict(entry["cases"])  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.golden")
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="run every case with PYDUMPFILE and store the output hashes")
    rec.add_argument("--pydumpfile", default=str(Path(sys.executable).with_name("pydumpfile")))
    rec.add_argument("--label", help="a name for the input in the store (default: its path)")
    rec.add_argument("vmcores", nargs="+")
    chk = sub.add_parser("check", help="run every case and compare with the store")
    chk.add_argument("--pydumpfile", default=str(Path(sys.executable).with_name("pydumpfile")))
    chk.add_argument("vmcores", nargs="+")
    a = ap.parse_args(argv)
    store = load_store()
    bad = 0
    for vm in a.vmcores:
        fp = fingerprint(vm)
        with tempfile.TemporaryDirectory(prefix="golden-", dir=os.environ.get("GOLDEN_TMP")) as d:
            got = run_cases([a.pydumpfile], vm, Path(d))
        if a.cmd == "record":
            store[fp] = {"input": a.label or vm, "cases": got}
            failed = [k for k, v in got.items() if v.startswith("exit")]
            print(f"{vm}: {len(got)} cases recorded" + (f" ({len(failed)} failed: {failed})" if failed else ""))
        else:
            want = store.get(fp, {}).get("cases")
            if want is None:
                print(f"{vm}: no recorded hashes for this input")
                bad += 1
                continue
            diff = [k for k in want if got.get(k) != want[k]]
            print(f"{vm}: {len(want) - len(diff)}/{len(want)} identical" + (f"; differ: {diff}" if diff else ""))
            bad += bool(diff)
    if a.cmd == "record":
        STORE.write_text(json.dumps(store, indent=1, sort_keys=True) + "\n")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
