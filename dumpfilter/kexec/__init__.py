"""The kdump flow around the collector: crashkernel= (crashkernel.py), kdump.conf (kdumpconf.py),
loading a capture kernel with kexec_file_load (loader.py, ``pykexec``) and ``pykdumpctl``."""
