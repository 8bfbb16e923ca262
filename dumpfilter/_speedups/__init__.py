"""Cython kernels for the hot loops (built by setup.py as dumpfilter._speedups.*)."""
