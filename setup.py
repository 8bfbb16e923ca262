"""Build the Cython kernels in dumpfilter/_speedups/ as dumpfilter._speedups.*."""
from Cython.Build import cythonize
from setuptools import Extension, setup

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

setup(ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}))
