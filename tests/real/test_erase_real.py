"""Erase filters on real vmcores (issue 14).

- 6.1 with Debian's -dbg vmlinux: ``--config`` (globals, struct members, a ``char *`` string, nullified
  pointers, size from a variable, loops over the task list, ``via`` and an array) gives the same page
  contents and eraseinfo as makedumpfile 1.7.2's ``-x --config`` — through ``-x`` and through BTF alone.
- 6.12 and 7.x without a vmlinux: the BTF+kallsyms path writes exactly the file the ``-x`` path writes
  with that kernel's -dbg vmlinux, and drgn (given the vmlinux) reads the erased fields as 'X'.
- refiltering an erased dump keeps its eraseinfo and appends to it.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from fixtures.dbgsym import vmlinux as dbg_vmlinux
from fixtures.realcore_lib import cache_dir
from tests.helpers import KdumpFile, makedumpfile, run

CONFIG = """\
# every construct of makedumpfile.conf(5)
[vmlinux]
erase init_uts_ns.name.nodename
erase saved_command_line
erase init_task.comm
erase init_task.cred size 2K
erase jiffies_64 size 4
erase init_task.thread size init_task.prio
for tsk in init_task.tasks within task_struct:tasks
\terase tsk.comm
\terase tsk.mm nullify
\terase tsk.pid size 4
endfor
for t in init_task via real_parent
\terase t.utime
endfor
for r in init_task.signal.rlim
\terase r.rlim_max
endfor
[no_such_module]
erase some_symbol
"""


def _eraseinfo(path: Path) -> bytes:
    from dumpfilter.source import open_source

    with open_source(str(path)) as s:
        return s.info.eraseinfo


def _same_pages(a: Path, b: Path) -> None:
    ka, kb = KdumpFile.load(str(a)), KdumpFile.load(str(b))
    assert (ka.bitmap1 == kb.bitmap1).all() and (ka.bitmap2 == kb.bitmap2).all()
    pfns = ka.dumped_pfns().tolist()
    differ = [hex(p) for p in pfns if ka.page(p) != kb.page(p)]
    assert not differ, f"{len(differ)} pages differ, first {differ[:5]}"


@pytest.fixture(scope="module")
def conf(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("conf") / "erase.conf"
    p.write_text(CONFIG)
    return p


@pytest.fixture(scope="module")
def oracle_61(core_61, conf) -> tuple[Path, Path]:
    """makedumpfile -l -d 31 -x VMLINUX --config (cached: it reads the DWARF anew for every lookup)."""
    vml = dbg_vmlinux(core_61)
    key = hashlib.sha256(CONFIG.encode() + str(core_61).encode() + str(vml.stat().st_size).encode()).hexdigest()[:16]
    out = cache_dir() / "oracle" / f"erase-{key}.dump"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        r = makedumpfile(["-f", "-l", "-d", "31", "-x", vml, "--config", conf, core_61 / "vmcore", tmp], timeout=3000)
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        tmp.rename(out)
    return out, vml


def test_x_path_matches_makedumpfile_61(oracle_61, core_61, conf, tmp_path):
    ref, vml = oracle_61
    out = tmp_path / "x.dump"
    r = run(["-f", "-l", "-d", "31", "-x", vml, "--config", conf, core_61 / "vmcore", out])
    assert r.returncode == 0, r.stderr.decode()
    assert b"no_such_module" in r.stdout + r.stderr  # the module section is skipped, as makedumpfile does
    info = _eraseinfo(out)
    assert info == _eraseinfo(ref)
    lines = info.decode().splitlines()
    assert "erase saved_command_line size " in lines[1] and "erase init_task.comm size 16" in lines
    assert sum(line.startswith("erase tsk.mm nullify") for line in lines) > 20
    assert any(line.startswith("erase r.rlim_max size 8") for line in lines)
    _same_pages(out, ref)


def test_btf_path_matches_makedumpfile_61(oracle_61, core_61, conf, tmp_path):
    """No -x: kallsyms from VMCOREINFO and the dump's BTF erase the same bytes."""
    ref, _ = oracle_61
    out = tmp_path / "btf.dump"
    r = run(["-f", "-l", "-d", "31", "--config", conf, core_61 / "vmcore", out])
    assert r.returncode == 0, r.stderr.decode()
    assert _eraseinfo(out) == _eraseinfo(ref)
    _same_pages(out, ref)


@pytest.mark.parametrize("kernel", ["6.12", "7.x"])
def test_btf_path_equals_x_path(kernel, realcore, conf, tmp_path):
    core = realcore(kernel)
    vml = dbg_vmlinux(core)
    a, b = tmp_path / "btf.dump", tmp_path / "x.dump"
    r = run(["-f", "-l", "-d", "31", "--config", conf, core / "vmcore", a])
    assert r.returncode == 0, r.stderr.decode()
    r = run(["-f", "-l", "-d", "31", "-x", vml, "--config", conf, core / "vmcore", b])
    assert r.returncode == 0, r.stderr.decode()
    assert a.read_bytes() == b.read_bytes()
    info = _eraseinfo(a).decode()
    assert info.count("erase tsk.comm size 16\n") > 20

    import drgn

    prog = drgn.Program()
    prog.set_core_dump(str(a))
    prog.load_debug_info([str(vml)])
    assert prog["init_task"].comm.string_() == b"X" * 16
    node = prog["init_uts_ns"].name.nodename
    n = len(bytes(prog.read(node.address_, 65)).split(b"\0")[0])
    assert n > 0 and bytes(prog.read(node.address_, n)) == b"X" * n
    task = prog["init_task"].tasks.next.value_() - drgn.offsetof(prog.type("struct task_struct"), "tasks")
    t = drgn.Object(prog, "struct task_struct", address=task)
    assert t.comm.string_() == b"X" * 16 and t.mm.value_() == 0


def test_refilter_keeps_and_extends_eraseinfo(core_612, tmp_path):
    first, second = tmp_path / "first.conf", tmp_path / "second.conf"
    first.write_text("erase init_task.comm\n")
    second.write_text("erase init_uts_ns.name.nodename\n")
    a, b = tmp_path / "a.dump", tmp_path / "b.dump"
    assert run(["-f", "-l", "-d", "1", "--config", first, core_612 / "vmcore", a]).returncode == 0
    r = run(["-f", "-z", "-d", "31", "--config", second, a, b])
    assert r.returncode == 0, r.stderr.decode()
    info = _eraseinfo(b).decode()
    assert info.startswith("erase init_task.comm size 16\n")
    assert info.splitlines()[1].startswith("erase init_uts_ns.name.nodename size ")
    assert run(["verify", b]).returncode == 0


def test_debuggable_61_612_7x(realcore, tmp_path):
    """Our -d 31 dumps lack none of the pages crash and drgn need (pydumpfile verify agrees)."""
    for kernel in ("6.1", "6.12", "7.x"):
        core = realcore(kernel)
        out = tmp_path / f"{kernel}.dump"
        r = run(["-f", "-l", "-d", "31", core / "vmcore", out])
        assert r.returncode == 0, r.stderr.decode()
        assert b"lacks a page" not in r.stdout + r.stderr
        v = run(["verify", "--vmcore", core / "vmcore", out])
        assert v.returncode == 0, v.stdout.decode()


EXCLUDE_IDT = '''
API_VERSION = 1
SYMBOLS = ["idt_table"]

def run(ctx):
    ctx.exclude_vaddr(ctx.symbol("idt_table"), 1)
'''


def test_missing_page_is_named_and_kept(core_612, tmp_path):
    plugin = tmp_path / "drop_idt.py"
    plugin.write_text(EXCLUDE_IDT)
    out = tmp_path / "drop.dump"
    r = run(["-f", "-l", "-d", "31", "--show-stats", "--extension", plugin, core_612 / "vmcore", out])
    assert r.returncode == 0, r.stderr.decode()
    text = (r.stdout + r.stderr).decode()
    assert "lacks a page crash and drgn need: idt_table" in text
    assert "Extension filter pages  : 0x0000000000000001" in text
    v = run(["verify", out])
    assert v.returncode == 1 and "idt_table" in v.stdout.decode()
    kept = tmp_path / "kept.dump"
    r = run(["-f", "-l", "-d", "31", "--show-stats", "--keep-debuggable", "--extension", plugin,
             core_612 / "vmcore", kept])
    assert r.returncode == 0
    text = (r.stdout + r.stderr).decode()
    assert "lacks a page" not in text and "Kept for debugging      : -0x0000000000000001" in text
    assert run(["verify", kept]).returncode == 0


MODULE_CONF = """\
[virtio_blk]
erase major size 4
erase virtblk_wq nullify
[no_such_module]
erase whatever
[vmlinux]
erase init_task.comm
"""


def test_module_sections_through_btf(core_612, tmp_path):
    """A [module] section finds the module's symbols in its own kallsyms (and types in its BTF, kept by
    btf_modules once the module is loaded); a module that is not loaded is skipped."""
    from dumpfilter.kernel.arch import for_machine
    from dumpfilter.kernel.symbols import DumpSymbols
    from dumpfilter.kernel.vmcoreinfo import VmcoreInfo
    from dumpfilter.source import open_source

    conf = tmp_path / "mod.conf"
    conf.write_text(MODULE_CONF)
    out = tmp_path / "mod.dump"
    r = run(["-f", "-l", "-d", "31", "--config", conf, core_612 / "vmcore", out])
    assert r.returncode == 0, r.stderr.decode()
    assert b"[no_such_module]" in r.stdout + r.stderr
    assert _eraseinfo(out) == b"erase major size 4\nerase virtblk_wq nullify\nerase init_task.comm size 16\n"
    with open_source(str(core_612 / "vmcore")) as src:
        vi = VmcoreInfo.parse(src.vmcoreinfo_raw)
        k = DumpSymbols(for_machine(src.elf_machine).mmu(src, vi), vi)
        m = k.module("virtio_blk")
        assert m is not None and "virtio_blk" in k.modules()
        assert m.struct("virtio_blk") is not None  # only the module's BTF has it
        pa = k.mmu.vtop(m.address("major"))
    page = KdumpFile.load(str(out)).page(pa // 4096)
    assert page[pa % 4096:pa % 4096 + 4] == b"XXXX"


def test_elf_output_carries_an_eraseinfo_note(core_612, conf, tmp_path):
    """-E with --config: the erased bytes in the segments, the eraseinfo as makedumpfile's ERASEINFO note
    (PT_NOTE p_filesz covers it, p_memsz does not)."""
    from elftools.elf.elffile import ELFFile

    kd, elf = tmp_path / "k.dump", tmp_path / "e.elf"
    assert run(["-f", "-l", "-d", "31", "--config", conf, core_612 / "vmcore", kd]).returncode == 0
    r = run(["-f", "-E", "-d", "31", "--config", conf, core_612 / "vmcore", elf])
    assert r.returncode == 0, r.stderr.decode()
    with open(elf, "rb") as f:
        e = ELFFile(f)
        seg = next(s for s in e.iter_segments() if s["p_type"] == "PT_NOTE")
        notes = {n["n_name"]: n for n in seg.iter_notes()}
        assert seg["p_filesz"] > seg["p_memsz"]
        desc = notes["ERASEINFO"]["n_desc"]
        desc = desc.encode("latin-1") if isinstance(desc, str) else bytes(desc)
    assert desc == _eraseinfo(kd)


def test_shipped_plugins(core_7x, tmp_path):
    out = tmp_path / "safe.dump"
    r = run(["-f", "-l", "-d", "31", "--show-stats", "--extension", "erase_comm", "--extension", "share_safe",
             core_7x / "vmcore", out])
    assert r.returncode == 0, r.stderr.decode()
    info = _eraseinfo(out).decode().splitlines()
    assert sum(line == "erase task.comm size 16" for line in info) > 20
    assert any(line.startswith("erase saved_command_line size ") for line in info)
    assert any(line.startswith("erase init_uts_ns.name.nodename size ") for line in info)
    assert "Extension filter pages  : 0x0000000000000000" in r.stdout.decode()
    # the kernel command line is gone from the dump, the rest of the page is intact
    import drgn

    prog = drgn.Program()
    prog.set_core_dump(str(out))
    prog.load_debug_info([str(dbg_vmlinux(core_7x))])
    cmd = prog["saved_command_line"]
    assert set(cmd.string_()) == {ord("X")}
    r = run(["-f", "-l", "-d", "1", "--extension", "share_safe", core_7x / "vmcore", tmp_path / "unsafe.dump"])
    assert r.returncode == 1 and b"bit 8" in r.stderr


def test_vtop_matches_makedumpfile(core_61):
    from dumpfilter.kernel.vmcoreinfo import VmcoreInfo
    from dumpfilter.source import open_source

    with open_source(str(core_61 / "vmcore")) as s:
        va = VmcoreInfo.parse(s.vmcoreinfo_raw).symbol["init_uts_ns"]
    ours = run(["--vtop", f"{va:#x}", core_61 / "vmcore"])
    theirs = makedumpfile(["-f", "-d", "1", "--dry-run", "--vtop", f"{va:#x}", core_61 / "vmcore", "/dev/null"])
    assert ours.returncode == 0
    lines = theirs.stdout.decode().splitlines()
    i = lines.index(f"Translating virtual address {va:x} to physical address.")
    j = lines.index("VIRTUAL           PHYSICAL", i)  # makedumpfile prints its table walk in between
    mine = ours.stdout.decode().splitlines()
    assert mine[1] == lines[i] and mine[2:4] == lines[j:j + 2]


@pytest.mark.parametrize("kernel", ["6.1", "6.12", "7.x"])
def test_gen_vmcoreinfo_matches_makedumpfile(kernel, realcore, tmp_path):
    """-g VMCOREINFO -x VMLINUX writes the lines makedumpfile 1.7.2 writes (its output cached)."""
    vml = dbg_vmlinux(realcore(kernel))
    ref = cache_dir() / "oracle" / f"g-{vml.parent.name}-{vml.stat().st_size}.vmcoreinfo"
    if not ref.exists():
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        r = makedumpfile(["-g", tmp, "-x", vml], timeout=3000)
        assert r.returncode == 0, r.stderr.decode()
        tmp.rename(ref)
    out = tmp_path / "vmcoreinfo"
    r = run(["-g", out, "-x", vml])
    assert r.returncode == 0, r.stderr.decode()
    assert out.read_text() == ref.read_text()
    assert "SRCFILE(pud_t)=" in ref.read_text() and "SIZE(page)=" in ref.read_text()


def test_readme_sharing_examples_run(core_612, tmp_path):
    """The commands of README's "Sharing a dump safely", on the 6.12 fixture."""
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    text = (root / "README.md").read_text()
    section = text[text.index("## Sharing a dump safely"):text.index("## Loading the capture kernel")]
    cmds = re.findall(r"```sh\n(.*?)\n```", section, re.S)
    assert len(cmds) == 3
    for cmd in cmds:
        args = cmd.split()
        assert args[0] == ".venv/bin/pydumpfile"
        args = [a.replace("/tmp/core612", str(core_612)).replace("/tmp/", f"{tmp_path}/") for a in args[1:]]
        r = subprocess.run([sys.executable, "-m", "dumpfilter", *args], cwd=root, capture_output=True)
        assert r.returncode == 0, (cmd, r.stdout.decode()[-800:], r.stderr.decode()[-800:])
    info = _eraseinfo(tmp_path / "scrubbed.dump").decode()
    assert info.startswith("erase saved_command_line size ") and "erase init_uts_ns.name.nodename size" in info


_ = shutil
