"""Build the Cython kernels in _speedups/ as dumpfilter._speedups.*."""
from Cython.Build import cythonize
import numpy
from setuptools import Extension, setup

extensions = [
    Extension(
        "dumpfilter._speedups.pages",
        ["_speedups/pages.pyx"],
        include_dirs=[numpy.get_include()],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dumpfilter._speedups.compress",
        ["_speedups/compress.pyx"],
        libraries=["z", "deflate", "lzo2", "snappy", "zstd"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dumpfilter._speedups.classify",
        ["_speedups/classify.pyx"],
        include_dirs=[numpy.get_include()],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "dumpfilter._speedups.bits",
        ["_speedups/bits.pyx"],
        extra_compile_args=["-O3"],
    ),
]

setup(ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}))
