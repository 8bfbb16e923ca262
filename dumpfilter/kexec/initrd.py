"""What the capture initramfs needs of Python, and ``pykdumpctl rebuild`` (dracut with 99pydumpfile).

The file list is found by tracing, not by copying a whole installation:

1. :func:`package_imports` walks the AST of the capture path's modules (``pykdumpctl capture`` and the
   ``pydumpfile`` collector), following this package's own imports, lazy ones inside functions included,
   and collects every other top-level module name they import;
2. :func:`trace` imports the entry modules and those names in a fresh interpreter and reads its
   ``sys.modules``: the closure of what Python itself loads (site is skipped: ``-S``);
3. :func:`classify` sorts them: pure standard-library modules go into ``lib/pythonXY.zip`` as compiled
   bytecode (Python puts that zip on sys.path by itself), standard-library extensions into
   ``lib/pythonX.Y/lib-dynload``, this package and third-party modules (numpy, lzo, …) into ``site/`` as
   sourceless ``.pyc`` next to their ``.so`` files.

:func:`stage` writes that tree under ``PREFIX`` (/usr/lib/pydumpfile) plus the launchers /usr/bin/pydumpfile and
/usr/bin/pykdumpctl (``PYTHONHOME=PREFIX``, ``PYTHONPATH=PREFIX/site``, ``python -S``); ELF files (the
interpreter, the ``.so`` files) are listed for dracut's ``inst_binary``, which adds their shared libraries.
The dracut module (data/dracut/99pydumpfile/module-setup.sh) runs ``pykdumpctl initrd-files --stage DIR``.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import py_compile
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import DumpfilterError

PREFIX = "/usr/lib/pydumpfile"
#: what the capture runs: the flow and the collector (python -m dumpfilter)
ENTRY = ("dumpfilter.kexec.pykdumpctl", "dumpfilter.kexec.capture", "dumpfilter.cli", "dumpfilter.__main__")
#: imported by the package somewhere, never on the capture path (tests, optional DWARF via drgn)
EXCLUDE = frozenset({"drgn", "_drgn", "pytest", "psutil", "mypy", "tkinter", "idlelib", "test", "lib2to3",
                     "ensurepip", "pydoc_data", "fixtures", "turtledemo",
                     # start-up of a full interpreter; the initramfs runs python -S
                     "site", "_sitebuiltins", "sitecustomize", "usercustomize", "_distutils_hack"})
#: third-party modules only some input formats or options use (kdump-compressed input, -x vmlinux,
#: verify); the trace keeps them out, so a capture initramfs does not carry numpy and its BLAS
OPTIONAL = ("numpy", "elftools", "lzo", "snappy", "zstandard", "cramjam",
            # shutil tries these at import and does without them; their libraries cost ~0.4 MiB
            "bz2", "_bz2", "lzma", "_lzma")
#: decoders Python may need at start-up in a C/UTF-8 locale
ALWAYS = ("encodings.utf_8", "encodings.ascii", "encodings.latin_1", "encodings.aliases")
PACKAGE = "dumpfilter"


class InitrdError(DumpfilterError):
    pass


def _module_file(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.has_location:
        return None
    return Path(spec.origin)


def _imports_of(path: Path, module: str, is_package: bool) -> set[str]:
    """Absolute module names imported anywhere in a file (``from . import x`` gives ``pkg.x`` too)."""
    tree = ast.parse(path.read_bytes(), str(path))
    out: set[str] = set()
    base = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                mod = f"{parent}.{node.module}" if node.module else parent
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names if a.name != "*")
    return out


def package_imports(entry: tuple[str, ...] = ENTRY) -> tuple[set[str], set[str]]:
    """(this package's modules reached from ``entry``, standard-library names they import)."""
    ours: set[str] = set()
    other: set[str] = set()
    missing = [e for e in entry if not _exists(e)]
    if missing:  # a renamed module must not silently shrink the initramfs
        raise InitrdError(f"the capture path's entry modules are missing: {', '.join(missing)}")
    todo = list(entry)
    while todo:
        name = todo.pop()
        if name in ours:
            continue
        path = _module_file(name)
        if path is None or path.suffix != ".py":
            if path is not None:
                ours.add(name)  # an extension module of ours
            continue
        ours.add(name)
        parts = name.split(".")
        for i in range(1, len(parts)):
            todo.append(".".join(parts[:i]))
        for imp in _imports_of(path, name, path.name == "__init__.py"):
            if imp.split(".")[0] == PACKAGE:
                if importlib.util.find_spec(imp.rpartition(".")[0] or imp) is not None and _exists(imp):
                    todo.append(imp)
            elif imp.split(".")[0] in sys.stdlib_module_names and imp.split(".")[0] not in EXCLUDE:
                other.add(imp)  # standard library, also when imported lazily inside a function
    return ours, other


def _exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


_TRACE = r"""
import importlib, json, sys
names, optional = json.loads(sys.argv[1]), set(json.loads(sys.argv[2]))
class Block:  # a meta path finder; not importlib.abc's class, which imports zipfile, bz2, lzma ...
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in optional:
            raise ImportError(name)
        return None
sys.meta_path.insert(0, Block())
for n in names:
    try:
        importlib.import_module(n)
    except Exception:
        # "from concurrent.futures import ThreadPoolExecutor": an attribute, maybe loaded lazily by the
        # package's __getattr__ (concurrent.futures imports its .thread module only then)
        parent, _, attr = n.rpartition(".")
        if not parent:
            continue
        try:
            getattr(importlib.import_module(parent), attr, None)
        except Exception:
            pass
out = {}
for n, m in list(sys.modules.items()):
    f = getattr(m, "__file__", None)
    out[n] = f
print(json.dumps(out))
"""


def trace(names: list[str], python: str = sys.executable, optional: tuple[str, ...] = OPTIONAL
          ) -> dict[str, str | None]:
    """``{module: file or None (built in)}`` after importing ``names`` in a fresh interpreter (its own
    start-up modules included, ``site`` and ``.pth`` hooks left out)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2]) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    names = [n for n in names if not n.endswith("__main__")]  # importing it would run it
    r = subprocess.run([python, "-c", _TRACE, json.dumps(names), json.dumps(list(optional))],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise InitrdError(f"tracing the imports failed: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
    mods: dict[str, str | None] = json.loads(r.stdout)
    return {n: f for n, f in mods.items()
            if n.split(".")[0] not in EXCLUDE and not n.startswith("__editable__") and n != "__main__"}


@dataclass
class FileList:
    """Where each traced module goes. Paths in the initramfs are relative to ``PREFIX``."""

    stdlib_zip: dict[str, Path] = field(default_factory=dict)  # arcname (os.pyc, json/__init__.pyc) -> source
    dynload: dict[str, Path] = field(default_factory=dict)  # lib/python3.X/lib-dynload/… -> .so
    site_pyc: dict[str, Path] = field(default_factory=dict)  # site/dumpfilter/cli.pyc -> source
    site_elf: dict[str, Path] = field(default_factory=dict)  # site/numpy/…/x.so -> .so
    interpreter: Path = field(default_factory=lambda: Path(os.path.realpath(sys.executable)))

    def elf(self) -> dict[str, Path]:
        """Destination (under PREFIX) -> ELF source, for dracut's inst_binary."""
        out = {"bin/python3": self.interpreter}
        out.update(self.dynload)
        out.update(self.site_elf)
        return out

    def modules(self) -> int:
        return len(self.stdlib_zip) + len(self.dynload) + len(self.site_pyc) + len(self.site_elf)


def _zip_name() -> str:
    return f"python{sys.version_info.major}{sys.version_info.minor}.zip"


def _stdlib_dirs() -> tuple[Path, Path]:
    paths = sysconfig.get_paths()
    return Path(paths["stdlib"]).resolve(), Path(sysconfig.get_config_var("DESTSHARED") or paths["platstdlib"]).resolve()


def _site_root(file: Path, name: str, is_package: bool) -> Path:
    """The sys.path entry ``file`` was imported from (its top package's parent)."""
    depth = name.count(".") + (1 if is_package else 0)
    root = file.parent
    for _ in range(depth):
        root = root.parent
    return root


def classify(mods: dict[str, str | None]) -> FileList:
    stdlib, dynload = _stdlib_dirs()
    fl = FileList()
    for name, f in sorted(mods.items()):
        if not f:
            continue  # built in or frozen
        path = Path(f).resolve()
        is_pkg = path.stem == "__init__"
        is_ext = path.suffix == ".so"
        if path.suffix not in (".py", ".so"):
            continue
        if path.is_relative_to(dynload) and is_ext:
            fl.dynload[f"lib/python{sys.version_info.major}.{sys.version_info.minor}/lib-dynload/{path.name}"] = path
        elif path.is_relative_to(stdlib) and "site-packages" not in path.parts and "dist-packages" not in path.parts:
            rel = path.relative_to(stdlib)
            if is_ext:
                fl.dynload[f"lib/python{sys.version_info.major}.{sys.version_info.minor}/{rel}"] = path
            else:
                fl.stdlib_zip[str(rel.with_suffix(".pyc"))] = path
        else:
            rel = path.relative_to(_site_root(path, name, is_pkg))
            if is_ext:
                fl.site_elf[f"site/{rel}"] = path
            else:
                fl.site_pyc[f"site/{rel.with_suffix('.pyc')}"] = path
    return fl


def compute(python: str = sys.executable) -> FileList:
    """The traced file list of the capture path."""
    ours, other = package_imports()
    names = sorted(ours) + sorted(other) + list(ALWAYS)
    mods = trace(names, python)
    # all of this package (a module that needs an optional dependency is there, and says so if used)
    pkg = Path(__file__).resolve().parents[1]
    for f in sorted(pkg.rglob("*")):
        if f.suffix in (".py", ".so") and "__pycache__" not in f.parts:
            rel = f.relative_to(pkg.parent).with_suffix("")
            name = ".".join(rel.parts).split(".cpython")[0].removesuffix(".__init__")
            mods.setdefault(name, str(f))
    return classify(mods)


def _pyc(src: Path, dest: Path, name: str) -> None:
    # unchecked hash: no source to compare with in the initramfs, and the bytes do not depend on mtimes
    py_compile.compile(str(src), cfile=str(dest), dfile=name, doraise=True, optimize=2,
                       invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)


LAUNCHER = """#!/bin/sh
# pydumpfile in the capture initramfs (pykdumpctl initrd-files): the traced standard library in
# {prefix}/lib/{zip}, the package and its .so files in {prefix}/site
PYTHONHOME={prefix} PYTHONPATH={prefix}/site PYTHONDONTWRITEBYTECODE=1 \\
    exec {prefix}/bin/python3 -S -m {module} "$@"
"""


@dataclass(frozen=True)
class Staged:
    root: Path
    elf: dict[str, Path]  # absolute destination in the initramfs -> source
    pure_bytes: int  # the zip, the .pyc files and the launchers
    elf_bytes: int  # the interpreter and the .so files (not counting their shared libraries)
    modules: int


def stage(root: Path, fl: FileList | None = None, prefix: str = PREFIX) -> Staged:
    """Write the pure files under ``root`` (as the initramfs will hold them) and list the ELF files."""
    fl = fl or compute()
    base = root / prefix.lstrip("/")
    (base / "lib").mkdir(parents=True, exist_ok=True)
    pure = 0
    with tempfile.TemporaryDirectory() as tmp:
        zpath = base / "lib" / _zip_name()
        with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as z:
            for arc, src in sorted(fl.stdlib_zip.items()):
                out = Path(tmp) / "m.pyc"
                _pyc(src, out, arc[:-1])
                z.write(out, arc)
        pure += zpath.stat().st_size
    for rel, src in sorted(fl.site_pyc.items()):
        dest = base / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        _pyc(src, dest, rel[:-1])
        pure += dest.stat().st_size
    bindir = root / "usr/bin"
    bindir.mkdir(parents=True, exist_ok=True)
    for cmd, module in (("pydumpfile", "dumpfilter"), ("pykdumpctl", "dumpfilter.kexec.pykdumpctl")):
        launcher = bindir / cmd
        launcher.write_text(LAUNCHER.format(prefix=prefix, zip=_zip_name(), module=module))
        launcher.chmod(0o755)
        pure += launcher.stat().st_size
    elf = {f"{prefix}/{rel}": src for rel, src in fl.elf().items()}
    return Staged(root, elf, pure, sum(p.stat().st_size for p in elf.values()), fl.modules())


def install_elf_copies(staged: Staged) -> None:
    """Copy the ELF files into the staged tree too (tests, and a tree to run without dracut)."""
    for dest, src in staged.elf.items():
        out = staged.root / dest.lstrip("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, out)


def shared_libraries(elf: list[Path]) -> dict[str, Path]:
    """The shared libraries ``ldd`` resolves for these ELF files (what inst_binary adds), by soname."""
    libs: dict[str, Path] = {}
    if shutil.which("ldd") is None:
        return libs
    for f in elf:
        r = subprocess.run(["ldd", str(f)], capture_output=True, text=True)
        for line in r.stdout.splitlines():
            parts = line.split()
            if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
                libs[parts[0]] = Path(parts[2])
            elif parts and parts[0].startswith("/"):
                libs[Path(parts[0]).name] = Path(parts[0])  # the dynamic loader
    return libs


def stripped_size(files: list[Path]) -> int | None:
    """Their total size after ``strip --strip-debug`` (what dracut's default --strip does), None without strip."""
    if shutil.which("strip") is None:
        return None
    total = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate(files):
            out = Path(tmp) / str(i)
            if subprocess.run(["strip", "--strip-debug", "-o", str(out), str(f)], capture_output=True).returncode:
                total += f.stat().st_size
            else:
                total += out.stat().st_size
                out.unlink()
    return total


@dataclass(frozen=True)
class Measure:
    pure: int
    elf: int
    elf_stripped: int | None
    libs: int
    libs_stripped: int | None
    nlibs: int

    def lines(self) -> list[str]:
        def pair(raw: int, stripped: int | None) -> str:
            return _mb(raw) + (f" ({_mb(stripped)} stripped)" if stripped is not None else "")

        total = self.pure + (self.elf_stripped or self.elf) + (self.libs_stripped or self.libs)
        return [f"bytecode, zip and launchers: {_mb(self.pure)}",
                f"interpreter and .so files:   {pair(self.elf, self.elf_stripped)}",
                f"their {self.nlibs} shared libraries: {pair(self.libs, self.libs_stripped)}",
                f"total in the initramfs:      {_mb(total)} before compression"]


def measure(st: Staged) -> Measure:
    elf = sorted(set(st.elf.values()))
    libs = sorted(set(shared_libraries(elf).values()))
    return Measure(st.pure_bytes, st.elf_bytes, stripped_size(elf), sum(p.stat().st_size for p in libs),
                   stripped_size(libs), len(libs))


def _mb(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def cmd_initrd_files(args: argparse.Namespace) -> int:
    st = stage(Path(args.stage))
    if args.copy_elf:
        install_elf_copies(st)
    if args.elf_list:
        with open(args.elf_list, "w") as f:
            for dest, src in sorted(st.elf.items()):
                f.write(f"{src} {dest}\n")
    print(f"staged {st.modules} modules under {args.stage}, {len(st.elf)} ELF files", file=sys.stderr)
    if args.measure:
        for line in measure(st).lines():
            print(line, file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# dracut


def module_dir() -> Path:
    return Path(str(resources.files("dumpfilter.kexec").joinpath("data/dracut/99pydumpfile")))


DRACUT_MODULES_D = "/usr/lib/dracut/modules.d"


def dracut_command(output: Path, *, kernel_release: str, conf_dracut_args: tuple[str, ...] = (),
                   network: bool = False, modules_d: Path = Path(DRACUT_MODULES_D)) -> list[str]:
    """``dracut`` for a capture initramfs that works on a VM and on a host: no host-only trimming (the
    capture kernel may need drivers the running system has not loaded), only the modules the capture
    needs (base, kernel modules, udev, our 99pydumpfile; network for nfs/ssh, with network-legacy named: left
    to choose, dracut's network module takes systemd-networkd on a host that has it, which needs systemd and
    dbus in the initramfs, and this one has neither), no resume/plymouth. Without
    a network target, network and ifcfg are left out too: Debian's dracut-network adds ifcfg to every
    image (/etc/dracut.conf.d/11-ifcfg.conf), which pulls in the network stack and its drivers (5 MiB more
    in a bookworm guest's image, 16 MiB unpacked: memory the capture kernel must have). network-legacy is
    named only where this dracut has it (dracut-ng dropped it; there dracut chooses)."""
    legacy = ["network-legacy"] if network and any(modules_d.glob("[0-9][0-9]network-legacy")) else []
    mods = (["base", "kernel-modules", "udev-rules", "fs-lib", "pydumpfile"]
            + (legacy + ["network"] if network else []))
    omit = ["plymouth", "resume"] + ([] if network else ["network", "ifcfg"])
    return ["dracut", "--force", "--no-hostonly", "--no-hostonly-cmdline", "-m", " ".join(mods),
            "--omit", " ".join(omit), "--kver", kernel_release, *conf_dracut_args, str(output)]


def install_module(modules_d: Path) -> Path:
    """Copy data/dracut/99pydumpfile into dracut's modules.d (replacing an older copy)."""
    dest = modules_d / "99pydumpfile"
    dest.mkdir(parents=True, exist_ok=True)
    for f in module_dir().iterdir():
        shutil.copyfile(f, dest / f.name)
        (dest / f.name).chmod(0o755)
    return dest


def rebuild(output: Path, *, config: str, kernel_release: str, dry_run: bool = False,
            modules_d: Path = Path(DRACUT_MODULES_D)) -> int:
    """Install the dracut module and build the capture initramfs; print the sizes."""
    from .kdumpconf import KdumpConfig, parse_file

    conf = parse_file(config) if os.path.exists(config) else KdumpConfig()
    cmd = dracut_command(output, kernel_release=kernel_release, conf_dracut_args=conf.dracut_args,
                         network=conf.target_kind in ("nfs", "ssh"), modules_d=modules_d)
    with tempfile.TemporaryDirectory() as tmp:
        st = stage(Path(tmp))
        print(f"python for the capture: {st.modules} modules, {len(st.elf)} ELF files")
        for line in measure(st).lines():
            print(f"  {line}")
    print(shlex.join(cmd))
    if dry_run:
        return 0
    if shutil.which("dracut") is None:
        raise InitrdError("dracut is not installed (apt-get install dracut-core, or dnf install dracut)")
    print(f"installed {install_module(modules_d)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYDUMPFILE_KDUMP_CONF=config, PYDUMPFILE_PYKDUMPCTL=shlex.join(
        [sys.executable, "-m", "dumpfilter.kexec.pykdumpctl"]))
    r = subprocess.run(cmd, env=env)
    if r.returncode != 0:
        raise InitrdError(f"dracut failed (exit {r.returncode})")
    print(f"built {output}: {_mb(output.stat().st_size)}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "initrd-files", help="stage the Python files the capture initramfs needs (used by 99pydumpfile)",
        description=f"Trace the imports of the capture path (pykdumpctl capture and the pydumpfile collector), "
        f"write the standard-library modules as bytecode into {PREFIX}/lib/{_zip_name()}, the package and "
        f"third-party modules as .pyc into {PREFIX}/site, and the launchers /usr/bin/pydumpfile and "
        "/usr/bin/pykdumpctl, all under DIR; list the ELF files (interpreter, .so) as 'SOURCE DEST' lines for "
        "dracut's inst_binary, which adds their shared libraries. Prints the sizes on stderr.")
    p.add_argument("--stage", required=True, metavar="DIR", help="write the tree here")
    p.add_argument("--elf-list", metavar="FILE", help="write the 'SOURCE DEST' lines of the ELF files here")
    p.add_argument("--copy-elf", action="store_true", help="copy the ELF files into DIR too (a runnable tree)")
    p.add_argument("--measure", action="store_true",
                   help="print the sizes: bytecode, ELF files and their shared libraries, raw and stripped")
    p.set_defaults(func=cmd_initrd_files)
