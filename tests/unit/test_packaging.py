"""Packaging (issue 12): no numpy at build time, an sdist with the Cython sources and stubs (and no
fixtures), Cython modules without debug info, and the man pages made from the ``--help`` texts.

The sdist is built once (``python -m build --sdist --no-isolation`` on a copy of the tree) and the wheel
once from it (``pip wheel --no-build-isolation``: every kernel compiled, ~40 s of CPU on this machine);
the wheel is then installed with ``--target`` and runs a dump. The strip is also checked on a one-line
extension built through the same ``BuildExt`` and on the package's own ``.so`` files (which
``pip install -e .`` built through it).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

import dumpfilter
from dumpfilter import manpage

REPO = Path(__file__).resolve().parents[2]
SPEEDUPS = REPO / "dumpfilter" / "_speedups"
CYTHON_FILES = ("*.pyx", "*.pxd", "*.pxi", "*.pyi")


def tree_files() -> list[str]:
    """The files git knows of (tracked, or new and not ignored): what a fresh clone has."""
    r = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                       capture_output=True, check=True)
    return [f for f in r.stdout.decode().split("\0") if f and (REPO / f).is_file()]


@pytest.fixture(scope="module")
def sdist(tmp_path_factory) -> tarfile.TarFile:
    src = tmp_path_factory.mktemp("tree")
    for f in tree_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, src / f)
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(src)],
                       capture_output=True, text=True, timeout=300, cwd=src)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (path,) = out.glob("pydumpfile-*.tar.gz")
    return tarfile.open(path)


@pytest.fixture(scope="module")
def wheel(sdist: tarfile.TarFile, tmp_path_factory) -> zipfile.ZipFile:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                        str(sdist.name)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (path,) = out.glob("pydumpfile-*.whl")
    return zipfile.ZipFile(path)


def _names(sdist: tarfile.TarFile) -> set[str]:
    return {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}


def test_no_numpy_at_build_time() -> None:
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    assert not [r for r in requires if r.lower().startswith("numpy")], requires
    for f in ("setup.py", "build_support.py"):
        assert "numpy" not in (REPO / f).read_text(), f


def test_sdist_has_the_cython_sources_and_stubs(sdist: tarfile.TarFile) -> None:
    names = _names(sdist)
    want = {str(p.relative_to(REPO)) for pat in CYTHON_FILES for p in SPEEDUPS.glob(pat)}
    assert want and want <= names, sorted(want - names)
    assert {"setup.py", "build_support.py", "pyproject.toml", "MANIFEST.in", "README.md",
            "dumpfilter/manpage.py", "dumpfilter/plugins/samples/erase_comm.py"} <= names
    # every Python file of the package, nothing generated or compiled, no fixtures or tests
    py = {f for f in tree_files() if f.startswith("dumpfilter/") and f.endswith(".py")}
    assert py <= names, sorted(py - names)
    assert not [n for n in names if n.endswith((".c", ".so")) or n.split("/")[0] in ("fixtures", "tests", "build")]


def _sections(so: Path) -> set[str]:
    with open(so, "rb") as f:
        return {s.name for s in ELFFile(f).iter_sections()}


def test_build_ext_strips(tmp_path: Path) -> None:
    """BuildExt compiles with -g0 and links with -s: no .debug_* sections, no static symbol table."""
    (tmp_path / "tiny.pyx").write_text("def add(int a, int b):\n    return a + b\n")
    (tmp_path / "setup.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO)!r})\n"
        "from setuptools import Extension, setup\n"
        "from build_support import BuildExt\n"
        "setup(name='tiny', ext_modules=[Extension('tiny', ['tiny.pyx'])], cmdclass={'build_ext': BuildExt})\n")
    env = {k: v for k, v in os.environ.items() if k != "PYDUMPFILE_DEBUG_BUILD"}
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    (so,) = tmp_path.glob("tiny*.so")
    names = _sections(so)
    assert ".dynsym" in names and ".symtab" not in names and not [n for n in names if n.startswith(".debug")], names
    r = subprocess.run([sys.executable, "-c", "import tiny; print(tiny.add(2, 3))"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "5", r.stderr


def test_wheel_from_the_sdist(wheel: zipfile.ZipFile, tmp_path: Path, synth) -> None:
    names = set(wheel.namelist())
    sos = sorted(n for n in names if n.startswith("dumpfilter/_speedups/") and n.endswith(".so"))
    assert len(sos) == len(list(SPEEDUPS.glob("*.pyx"))), sos
    for n in sos:  # stripped: no debug sections, no static symbol table
        so = tmp_path / Path(n).name
        so.write_bytes(wheel.read(n))
        sections = _sections(so)
        assert ".symtab" not in sections and not [s for s in sections if s.startswith(".debug")], (n, sections)
    assert {f"dumpfilter/_speedups/{p.name}" for p in SPEEDUPS.glob("*.pyi")} <= names
    assert {f"pydumpfile-{dumpfilter.__version__}.data/data/share/man/man8/{name}.8"
            for name in ("pydumpfile", "pykexec", "pykdumpctl")} <= names
    assert "dumpfilter/manpage.py" in names and not [n for n in names if n.startswith(("fixtures/", "tests/"))]
    # installed on its own (the test environment gives the dependencies), it makes the same dump
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                        wheel.filename], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = tmp_path / "dump"
    r = subprocess.run([sys.executable, "-c", "import dumpfilter, sys; sys.argv[0] = 'pydumpfile'; "
                        "print(dumpfilter.__file__, file=sys.stderr); from dumpfilter.cli import main; "
                        "raise SystemExit(main())", "-l", "-d", "31", synth.path, str(out)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines()[0].startswith(str(target)), r.stderr  # the wheel's copy, not the tree's
    ref = tmp_path / "ref"
    assert subprocess.run([sys.executable, "-m", "dumpfilter", "-l", "-d", "31", synth.path, str(ref)],
                          capture_output=True, cwd=REPO, timeout=300).returncode == 0
    assert out.read_bytes() == ref.read_bytes()
    assert (target / "bin" / "pydumpfile").exists()


@pytest.mark.skipif(os.environ.get("PYDUMPFILE_DEBUG_BUILD") == "1", reason="a debug build keeps debug info")
def test_package_modules_are_stripped() -> None:
    sos = sorted(SPEEDUPS.glob("*.so"))
    assert sos, "no compiled modules: run pip install -e ."
    with_debug = [so.name for so in sos if any(n.startswith(".debug") for n in _sections(so))]
    assert not with_debug, f"{with_debug}: rebuild with pip install -e . (build_support.BuildExt strips them)"


# --- man pages ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def man_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("man")
    manpage.write_pages(d)
    return d


def test_build_support_writes_the_pages(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO))
    try:
        from build_support import man_pages
    finally:
        sys.path.remove(str(REPO))
    paths = man_pages(tmp_path / "man")
    assert sorted(Path(p).name for p in paths) == ["pydumpfile.8", "pykdumpctl.8", "pykexec.8"]
    assert all((REPO / p).resolve() == (tmp_path / "man" / Path(p).name).resolve() for p in paths)
    setup_py = (REPO / "setup.py").read_text()
    assert '("share/man/man8", man_pages(' in setup_py  # installed with the package


def _render(page: Path) -> str:
    if not shutil.which("man"):
        pytest.skip("man (man-db) is not installed (.ci/install-deps.sh installs it)")
    r = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MANWIDTH": "100", "PAGER": "cat", "LC_ALL": "C.UTF-8"})
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    return r.stdout


def _words(text: str) -> str:
    return " ".join(text.replace("\u2010", "-").replace("\u2212", "-").split())


@pytest.mark.parametrize("name", ["pydumpfile", "pykexec", "pykdumpctl"])
def test_man_page_renders(man_dir: Path, name: str) -> None:
    text = _render(man_dir / f"{name}.8")
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SEE ALSO"):
        assert f"\n{heading}\n" in text, heading
    assert text.splitlines()[0].startswith(f"{name.upper()}(8)")
    assert f"{name} {dumpfilter.__version__}" in text


def _help_items(help_text: str) -> list[tuple[str, str]]:
    return [item for _title, items in manpage.parse_help(help_text).sections for item in items]


def test_pydumpfile_page_is_the_help_text(man_dir: Path) -> None:
    from dumpfilter.cli import USAGE

    text = _words(_render(man_dir / "pydumpfile.8"))
    items = _help_items(USAGE)
    assert len(items) > 30
    for tag, desc in items:  # every option of --help, with its whole text
        assert _words(tag) in text and _words(desc) in text, tag
    for line in manpage.parse_help(USAGE).usage:
        assert _words(line) in text


def test_pykdumpctl_page_has_every_command(man_dir: Path) -> None:
    from dumpfilter.kexec.pykdumpctl import _parser

    text = _words(_render(man_dir / "pykdumpctl.8"))
    commands = manpage.subcommands(_parser())
    assert {"capture", "save-raw"} <= set(commands)
    for name, sub in commands.items():
        assert f"pykdumpctl {name}" in text
        for tag, desc in _help_items(manpage.help_text(sub)):
            assert _words(tag) in text and _words(desc) in text, (name, tag)


def test_pykexec_page_has_every_option(man_dir: Path) -> None:
    from dumpfilter.kexec.loader import _parser

    parser = _parser()
    text = _words(_render(man_dir / "pykexec.8"))
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in text, opt
    assert parser.epilog is None or _words(parser.epilog)[:60] in text  # the epilog: NOTES


def test_roff_escapes() -> None:
    assert manpage.esc(".start") == "\\&.start"
    assert manpage.esc("'quote") == "\\&'quote"
    assert manpage.esc("a\\b --x") == "a\\eb \\-\\-x"
    page = manpage.render("demo", "usage: demo [-x]\n\nDemo things.\n\noptions:\n  -x  .dot first, \\n kept\n")
    assert "\n.TP\n\\fB\\-x\\fR\n\\&.dot first, \\en kept\n" in page
    assert ".SH NAME\ndemo \\- demo things\n" in page
