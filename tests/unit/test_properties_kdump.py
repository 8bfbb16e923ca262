"""Property-based tests of the kdump-compressed reader (header, sub header, notes, eraseinfo, both
bitmaps, page descriptors, page data) and of the flattened format (``-R``'s record parser and the
FlatView of a flattened file): any input gives a result or a DumpfilterError, within the memory and
time bounds of tests/props.py.

Inputs: a kdump-compressed dump of a small synthetic vmcore (fixtures/synthetic.py, written by
pydumpfile itself), mutated in place region by region, and flattened streams made from it, mutated
or built from scratch."""
from __future__ import annotations

import io
import struct

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from dumpfilter.layouts import FLAT_HEADER, FLAT_HEADER_SIZE, FLAT_RECORD
from dumpfilter.source.flat import rearrange
from fixtures.synthetic import SynthSpec, generate
from tests.hostile import patched
from tests.props import ADDRESS_SPACE_MARGIN, INTERESTING, bounded, mutated, prop_settings, run_cli  # noqa: F401
from tests.unit.test_properties_elf import exercise_source

BS = 4096
# disk_dump_header (LP64): header_version, then from 408 tv_sec .. nr_cpus
HEADER_FIELDS = [(8, 4), (408, 8), (416, 8), (424, 4), (428, 4), (432, 4), (436, 4), (440, 4), (444, 4), (448, 4),
                 (452, 4), (456, 4), (460, 4)]
# kdump_sub_header at block 1: phys_base, dump_level, split, start/end_pfn, vmcoreinfo, notes, eraseinfo
# (offset, size), start/end_pfn_64, max_mapnr_64
SUB_FIELDS = [(BS + o, s) for o, s in [(0, 8), (8, 4), (12, 4), (16, 8), (24, 8), (32, 8), (40, 8), (48, 8), (56, 8),
                                       (64, 8), (72, 8), (80, 8), (88, 8), (96, 8)]]


@pytest.fixture(scope="module")
def kdump(tmp_path_factory):
    """A kdump-compressed (LZO, level 31) dump of a small vmcore: (path, regions) with the regions
    name -> (start, end) of its header blocks, bitmaps, descriptors and page data."""
    d = tmp_path_factory.mktemp("props-kdump")
    generate(d / "vmcore", SynthSpec(ram=[(0x1000, 0x9FC00), (0x100000, 0x800000)], pages="kernel61",
                                     kernel_size=0x200000, ncpus=1))
    out = d / "dump"
    assert run_cli(["-l", "-d", "31", str(d / "vmcore"), str(out)]) == 0
    raw = out.read_bytes()
    sub_hdr_size, bitmap_blocks = struct.unpack_from("<iI", raw, 432)
    bm1 = (1 + sub_hdr_size) * BS
    pd = bm1 + bitmap_blocks * BS
    first_data = struct.unpack_from("<q", raw, pd)[0]
    regions = {"headers": (0, bm1), "bitmap1": (bm1, bm1 + bitmap_blocks * BS // 2),
               "bitmap2": (bm1 + bitmap_blocks * BS // 2, pd), "descriptors": (pd, first_data),
               "data": (first_data, len(raw))}
    return str(out), regions


@given(data=st.data())
@prop_settings(80)
def test_mutated_kdump_compressed(kdump, data):
    path, regions = kdump
    name = data.draw(st.sampled_from(["headers", "headers", "bitmap1", "bitmap2", "descriptors", "data"]))
    start, end = regions[name]
    with open(path, "rb") as f:
        f.seek(start)
        orig = f.read(end - start)
    if name == "headers":
        fields = HEADER_FIELDS + SUB_FIELDS
    elif name == "descriptors":
        fields = [(i * 24 + o, s) for i in range(min(64, len(orig) // 24)) for o, s in ((0, 8), (8, 4), (12, 4))]
    else:
        fields = []
    new = data.draw(mutated(orig, fields))
    with patched(path, {start: new}):
        bounded(exercise_source, path)
        bounded(run_cli, ["--dry-run", "-l", "-d", "31", path])


# --- flattened ------------------------------------------------------------------------------------


def flatten(image: bytes, chunks: list[int], order: list[int] | None = None) -> bytes:
    """A flattened stream of ``image``: records cut at the given sizes, in ``order``."""
    recs = []
    pos = 0
    for n in chunks:
        if pos >= len(image):
            break
        recs.append((pos, image[pos : pos + n]))
        pos += n
    if pos < len(image):
        recs.append((pos, image[pos:]))
    if order is not None:
        recs = [recs[i % len(recs)] for i in order] + recs
    head = FLAT_HEADER.pack(b"makedumpfile", 1, 1).ljust(FLAT_HEADER_SIZE, b"\0")
    return head + b"".join(FLAT_RECORD.pack(o, len(d)) + d for o, d in recs) + FLAT_RECORD.pack(-1, -1)


def exercise_flat(path: str, stream: bytes) -> None:
    written = [0]

    def write_at(offset: int, data: bytes) -> None:  # -R's sink, without the file
        written[0] += len(data)

    bounded(rearrange, io.BytesIO(stream), write_at)
    bounded(exercise_source, path)
    bounded(run_cli, ["--dry-run", "-l", "-d", "31", path])


@pytest.fixture(scope="module")
def flat_image(kdump):
    path, regions = kdump
    with open(path, "rb") as f:
        image = f.read()
    return image


@given(data=st.data())
@prop_settings(40)
def test_mutated_flattened(flat_image, tmp_path_factory, data):
    chunks = data.draw(st.lists(st.sampled_from([1, 8, 464, 4096, 65536, 1 << 20]), min_size=1, max_size=12))
    order = data.draw(st.none() | st.lists(st.integers(0, 20), max_size=4))
    stream = flatten(flat_image, chunks, order)
    # the record headers' offsets and sizes (big-endian, but any value will do)
    fields = [(8 + 16, 8), (FLAT_HEADER_SIZE, 8), (FLAT_HEADER_SIZE + 8, 8)]
    pos, n = FLAT_HEADER_SIZE, 0
    while pos + 16 <= len(stream) and n < 40:
        off, size = FLAT_RECORD.unpack_from(stream, pos)
        fields += [(pos, 8), (pos + 8, 8)]
        if size < 0:
            break
        pos += 16 + size
        n += 1
    stream = data.draw(mutated(stream, fields, span=(0, min(len(stream), 1 << 16))))
    path = tmp_path_factory.getbasetemp() / "flat"
    path.write_bytes(stream)
    exercise_flat(str(path), stream)


@st.composite
def flat_streams(draw) -> bytes:
    head = FLAT_HEADER.pack(draw(st.sampled_from([b"makedumpfile", b"makedumpfilE"])), draw(st.sampled_from([1, 1, 2])),
                            1).ljust(FLAT_HEADER_SIZE, b"\0")
    recs = b""
    for _ in range(draw(st.integers(0, 8))):
        off = draw(st.one_of(st.sampled_from(INTERESTING), st.integers(-(1 << 63), (1 << 63) - 1)).map(
            lambda v: v if v < 1 << 63 else v - (1 << 64)))
        body = draw(st.one_of(st.just(b"KDUMP   " + bytes(600)), st.just(b"\x7fELF\x02\x01\x01" + bytes(100)),
                              st.binary(max_size=300)))
        size = len(body) if draw(st.booleans()) else draw(st.one_of(st.sampled_from(INTERESTING).map(
            lambda v: v if v < 1 << 63 else v - (1 << 64)), st.integers(-2, 4096)))
        recs += FLAT_RECORD.pack(off, size) + body
    end = draw(st.sampled_from([FLAT_RECORD.pack(-1, -1), b"", FLAT_RECORD.pack(-1, 0), b"\xff" * 9]))
    return head + recs + end


@given(stream=flat_streams())
@prop_settings(150)
@example(stream=FLAT_HEADER.pack(b"makedumpfile", 1, 1).ljust(FLAT_HEADER_SIZE, b"\0")
         + FLAT_RECORD.pack(1 << 46, 8) + b"KDUMP   " + FLAT_RECORD.pack(-1, -1))
def test_flattened_from_scratch(tmp_path_factory, stream):
    path = tmp_path_factory.getbasetemp() / "flat-scratch"
    path.write_bytes(stream)
    exercise_flat(str(path), stream)


# --- regressions found by the properties -----------------------------------------------------------


def far_flattened(head: bytes, tmp_path, name: str) -> str:
    """A flattened file holding ``head`` at offset 0 and 8 bytes at 1 TiB: its view claims 1 TiB."""
    path = tmp_path / name
    path.write_bytes(FLAT_HEADER.pack(b"makedumpfile", 1, 1).ljust(FLAT_HEADER_SIZE, b"\0")
                     + FLAT_RECORD.pack(0, len(head)) + head + FLAT_RECORD.pack(1 << 40, 8) + bytes(8)
                     + FLAT_RECORD.pack(-1, -1))
    return str(path)


@pytest.mark.parametrize("field, what", [(BS + 56, "notes"), (BS + 72, "eraseinfo")])
def test_notes_and_eraseinfo_larger_than_16_mib_are_refused(kdump, tmp_path, field, what):
    """A kdump header claiming 1 GiB of notes or eraseinfo, in a file that can hold them (here a
    flattened one whose records reach 1 TiB): they were read whole, 1 GiB of memory."""
    path, regions = kdump
    with open(path, "rb") as f:
        head = bytearray(f.read(regions["headers"][1]))
    struct.pack_into("<QQ", head, field - 8, 0x3000, 1 << 30)  # (offset, size)
    got = bounded(exercise_source, far_flattened(bytes(head), tmp_path, "far"))
    assert "at most 16 MiB" in str(got) and what in str(got), got


def test_pt_note_larger_than_16_mib_is_refused(kdump, tmp_path):
    path, _ = kdump
    vmcore = path.rsplit("/", 1)[0] + "/vmcore"
    with open(vmcore, "rb") as f:
        head = bytearray(f.read(8192))
    phoff, = struct.unpack_from("<Q", head, 32)
    k = next(i for i in range(4) if struct.unpack_from("<I", head, phoff + 56 * i)[0] == 4)
    struct.pack_into("<QQ", head, phoff + 56 * k + 32, 1 << 30, 1 << 30)  # p_filesz, p_memsz
    got = bounded(exercise_source, far_flattened(bytes(head), tmp_path, "far-elf"))
    assert "at most 16 MiB" in str(got) and "PT_NOTE" in str(got), got


def test_flattened_records_in_descending_order_index_in_n_log_n(tmp_path):
    """200000 one-byte records, each before the previous one (a 3.4 MB file): inserting each into a
    sorted list cost O(n) (12 s of CPU here, minutes for a million); the sweep takes well under a
    second. Measured without tracemalloc, which alone makes it 20 times slower."""
    import time

    from dumpfilter.source.flat import FlatView

    n = 200_000
    path = tmp_path / "descending.flat"
    path.write_bytes(FLAT_HEADER.pack(b"makedumpfile", 1, 1).ljust(FLAT_HEADER_SIZE, b"\0")
                     + b"".join(FLAT_RECORD.pack(2 * (n - i), 1) + b"x" for i in range(n)) + FLAT_RECORD.pack(-1, -1))
    t0 = time.process_time()
    view = FlatView(str(path))
    took = time.process_time() - t0
    assert len(view._starts) == n and view.size == 2 * n + 1
    assert view.pread(2, 3) == b"x\0x"
    view.close()
    assert took < 4, f"{took:.1f} s of CPU"
