"""Build the Cython kernels in dumpfilter/_speedups/ as dumpfilter._speedups.* (stripped: see
build_support.py) and the man pages pydumpfile.8, pykexec.8, pykdumpctl.8 (installed under
share/man/man8)."""
import sys
from pathlib import Path

from setuptools import Extension, setup

sys.path.insert(0, str(Path(__file__).resolve().parent))  # build_support.py, next to this file
from build_support import BuildExt, man_pages  # noqa: E402

CODEC_LIBS = ["z", "deflate", "lzo2", "snappy", "zstd"]
MODULES = {  # module -> C libraries it links
    "flags": [],
    "bits": [],
    "classify": [],
    "window": [],
    "reader": [],
    "compress": CODEC_LIBS,
    "descs": [],
    "kdumpread": CODEC_LIBS,
    "writeback": [],
    "ksyms": [],
}

extensions = [
    Extension(f"dumpfilter._speedups.{name}", [f"dumpfilter/_speedups/{name}.pyx"], libraries=libs,
              extra_compile_args=["-O3"])
    for name, libs in MODULES.items()
]

setup(
    ext_modules=extensions,
    cmdclass={"build_ext": BuildExt},
    data_files=[("share/man/man8", man_pages("build/man"))],
)
