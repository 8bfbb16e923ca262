"""Views of the input without a copy (ElfSource.phys_view, used for struct pages): giving one back
leaves none of the file's pages mapped in the process, even those the kernel mapped around a fault."""
from __future__ import annotations

import os
from pathlib import Path

from dumpfilter.source import open_source


def _mapped_kib(path: str) -> int:
    """Rss of this process's mappings of ``path`` (/proc/self/smaps), in KiB."""
    total, mine = 0, False
    real = os.path.realpath(path)
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
            mine = len(head) >= 6 and head[5] == real
        elif mine and line.startswith("Rss:"):
            total += int(head[1])
    return total


def test_release_view_leaves_nothing_mapped_on_a_cold_file(synth):
    fd = os.open(synth.path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # cold: readahead fills the pages around a fault
    finally:
        os.close(fd)
    src = open_source(str(synth.path))
    try:
        assert src.can_view
        # a view that ends inside a 2 MiB block of the file, past the middle of a PT_LOAD: the pages after
        # it are read ahead and mapped by the fault on its last page, unless release_view drops them too
        s, e, foff = max(src._ranges, key=lambda r: r[1] - r[0])
        pa = s + (4 << 20) + 3 * 4096
        size = (1 << 20) + 5 * 4096
        assert pa + size + (2 << 20) <= e
        views = 0
        for k in range(4):
            v = src.phys_view(pa + k * (3 << 20), size)
            assert v is not None
            sum(v[::4096])  # touch every page
            assert _mapped_kib(synth.path) > 0
            src.release_view(v, pa + k * (3 << 20))
            views += 1
        assert views == 4
        assert _mapped_kib(synth.path) == 0
    finally:
        src.close()


def test_a_file_on_disk_is_read_with_pread_and_proc_would_be_mapped(synth, tmp_path):
    from dumpfilter.source.base import FileView
    from tests.helpers import run

    src = open_source(str(synth.path))
    try:
        assert not src.fv.on_procfs and not src.maps_fast()
    finally:
        src.close()
    fv = FileView("/proc/self/stat")  # what /proc/vmcore shares: procfs
    try:
        assert fv.on_procfs
    finally:
        fv.close()
    r = run(["-D", "-l", "-d", "31", synth.path, tmp_path / "out"])
    assert r.returncode == 0, r.stderr.decode()
    assert "windows of 512 pages, pread reads" in r.stdout.decode() + r.stderr.decode()
