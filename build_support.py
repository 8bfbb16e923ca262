"""Build helpers for setup.py (not installed): the Cython kernels without debug info, and the man pages.

``BuildExt`` cythonizes when extensions are built (so ``sdist`` needs no Cython run and ships the
``.pyx`` sources), one module per CPU at a time, compiles with ``-g0`` and links with ``-s``: the ``.so`` files carry no debug
sections and no static symbol table (their dynamic symbols, all Python needs, stay). Set
``PYDUMPFILE_DEBUG_BUILD=1`` to keep the interpreter's default flags (``-g``) for debugging.

``man_pages(outdir)`` writes pydumpfile.8, pykexec.8 and pykdumpctl.8 from the ``--help`` texts (see
dumpfilter/manpage.py) and returns their paths, for ``data_files`` under share/man/man8.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from setuptools import Extension
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
DEBUG_ENV = "PYDUMPFILE_DEBUG_BUILD"
CYTHON_DIRECTIVES = {"boundscheck": False, "wraparound": False}
NO_DEBUG_COMPILE = ["-g0"]
NO_DEBUG_LINK = ["-s"]


class BuildExt(build_ext):
    def finalize_options(self) -> None:
        from Cython.Build import cythonize

        # cythonize() replaces the .pyx sources by generated .c files (build_ext then compiles these)
        jobs = os.cpu_count() or 1
        self.distribution.ext_modules = cythonize(
            self.distribution.ext_modules, language_level=3, compiler_directives=CYTHON_DIRECTIVES, nthreads=jobs)
        if self.parallel is None:
            self.parallel = jobs  # compile the modules side by side (build_ext -j N overrides)
        super().finalize_options()

    def build_extension(self, ext: Extension) -> None:
        if os.environ.get(DEBUG_ENV) != "1":
            # after the interpreter's CFLAGS (which carry -g): the last -g option wins
            ext.extra_compile_args = [*ext.extra_compile_args, *NO_DEBUG_COMPILE]
            ext.extra_link_args = [*ext.extra_link_args, *NO_DEBUG_LINK]
        super().build_extension(ext)


def man_pages(outdir: str | Path) -> list[str]:
    """Generate the man pages into OUTDIR from this source tree; their paths relative to setup.py."""
    sys.path.insert(0, str(HERE))
    try:
        from dumpfilter.manpage import write_pages
    finally:
        sys.path.remove(str(HERE))
    out = Path(outdir)
    return [os.path.relpath(p, HERE) for p in write_pages(out if out.is_absolute() else HERE / out)]
