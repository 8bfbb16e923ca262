"""Property-based tests of ``--dump-dmesg``'s readers: the 5.10+ lockless ring (printk_ringbuffer), the
3.5 - 5.9 ``struct printk_log`` records and the pre-3.5 character ring. Any kernel memory and any
VMCOREINFO give a log or a DumpfilterError, within the memory and time bounds of tests/props.py.

Inputs: rings written by fixtures/synthetic_printk.py (the kernel's own algorithms), whose structures,
pointers and VMCOREINFO are then mutated. Kernel memory is read either strictly (only the mapped
structures) or as a real dump reads it, where every other address is readable too (zeros): then
nothing but the checks of the reader itself bounds a walk."""
from __future__ import annotations

import random
import struct

from hypothesis import example, given
from hypothesis import strategies as st

from dumpfilter.kernel.dmesg import extract, printk_log_records
from dumpfilter.kernel.vmcoreinfo import VmcoreInfo
from fixtures.synthetic_printk import A_DESCS, A_INFOS, A_PRB, A_TEXT, ID_MASK, FakeMemory, LocklessRing, PrintkLog
from tests.props import bounded, mutated, mutated_text, prop_settings


def reader(mem: FakeMemory, everywhere: bool):
    """``mem.read``; with ``everywhere``, addresses outside the mapped structures read as zeros (up to
    1 MiB per read, as a dump's pages would), as in a real vmcore."""
    def read(addr: int, size: int) -> bytes:
        try:
            return mem.read(addr, size)
        except Exception:
            if not everywhere or size > 1 << 20:
                raise
            out = bytearray(size)
            for base, buf in mem.regions.items():  # the mapped parts of the range
                lo, hi = max(base, addr), min(base + len(buf), addr + size)
                if lo < hi:
                    out[lo - addr : hi - addr] = buf[lo - base : hi - base]
            return bytes(out)
    return read


def lockless_ring(seed: int, count_bits: int, size_bits: int, n: int) -> LocklessRing:
    rng = random.Random(seed)
    ring = LocklessRing(count_bits=count_bits, size_bits=size_bits)
    for i in range(n):
        text = bytes(rng.choice(b"ab \n\x01\xc3") for _ in range(rng.randrange(0, 40)))
        ring.printk(text, i * 1_000_003, caller_id=rng.choice([7, 0x80000001]))
        if rng.random() < 0.1:
            ring.dmesg_clear()
    return ring


def printk_log(seed: int, caller: bool, n: int) -> PrintkLog:
    rng = random.Random(seed)
    log = PrintkLog(buf_len=512, caller=caller)
    for i in range(n):
        log.printk(bytes(rng.choice(b"abc \n\x02\xff") for _ in range(rng.randrange(0, 60))), i * 10**7,
                   dict_=b"SUBSYSTEM=x" if i % 3 == 0 else b"")
        if rng.random() < 0.1:
            log.dmesg_clear()
    return log


def run(read, vmcoreinfo: str | bytes, partial: bool) -> None:
    """extract() as --dump-dmesg calls it: the log goes to a writer (here: counted) as it is read."""
    raw = vmcoreinfo.encode("utf-8", "surrogateescape") if isinstance(vmcoreinfo, str) else vmcoreinfo
    written = [0]

    def write(data: bytes) -> None:
        written[0] += len(data)

    bounded(extract, read, VmcoreInfo.parse(raw), partial, write=write)


# the printk_ringbuffer struct: desc_ring (count_bits, descs, infos, head_id, tail_id), text_data_ring
# (size_bits, data, head_lpos, tail_lpos)
PRB_FIELDS = [(0, 4), (8, 8), (16, 8), (24, 8), (32, 8), (48, 4), (56, 8), (64, 8), (72, 8)]


@given(seed=st.integers(0, 1 << 16), count_bits=st.integers(2, 6), size_bits=st.integers(7, 11),
       n=st.integers(0, 120), where=st.sampled_from(["prb", "descs", "infos", "text"]),
       everywhere=st.booleans(), partial=st.booleans(), data=st.data())
@prop_settings(120)
def test_mutated_lockless_ring(seed, count_bits, size_bits, n, where, everywhere, partial, data):
    ring = lockless_ring(seed, count_bits, size_bits, n)
    addr = {"prb": A_PRB, "descs": A_DESCS, "infos": A_INFOS, "text": A_TEXT}[where]
    buf = ring.mem.regions[addr]
    if where == "descs":
        fields = [(i * 24 + o, 8) for i in range(ring.count) for o in (0, 8, 16)]
    elif where == "infos":
        fields = [(i * 88 + o, s) for i in range(ring.count) for o, s in ((0, 8), (8, 8), (16, 2), (20, 4))]
    else:
        fields = PRB_FIELDS if where == "prb" else []
    buf[:] = data.draw(mutated(bytes(buf), fields))
    run(reader(ring.mem, everywhere), ring.vmcoreinfo(), partial)


@given(seed=st.integers(0, 1 << 16), n=st.integers(0, 60), everywhere=st.booleans(), partial=st.booleans(),
       data=st.data())
@prop_settings(100)
def test_lockless_ring_with_mutated_vmcoreinfo(seed, n, everywhere, partial, data):
    ring = lockless_ring(seed, 4, 9, n)
    text = data.draw(mutated_text(ring.vmcoreinfo().decode(), ["0", "88", "65536", "-8", "24"]))
    run(reader(ring.mem, everywhere), text, partial)


@given(head=st.integers(0, ID_MASK), tail=st.integers(0, ID_MASK), count_bits=st.integers(0, 40),
       size_bits=st.integers(0, 40))
@prop_settings(25)
def test_lockless_ring_claims_any_size(head, tail, count_bits, size_bits):
    ring = lockless_ring(1, 4, 9, 20)
    prb = ring.mem.regions[A_PRB]
    struct.pack_into("<I", prb, 0, count_bits)
    struct.pack_into("<QQ", prb, 24, head, tail)
    struct.pack_into("<I", prb, 48, size_bits)
    run(reader(ring.mem, True), ring.vmcoreinfo(), False)


LOG_FIELDS = [(i, s) for i in range(0, 512, 4) for s in (2, 8)]


@given(seed=st.integers(0, 1 << 16), caller=st.booleans(), n=st.integers(0, 80), everywhere=st.booleans(),
       partial=st.booleans(), data=st.data())
@prop_settings(100)
def test_mutated_printk_log(seed, caller, n, everywhere, partial, data):
    log = printk_log(seed, caller, n)
    target = data.draw(st.sampled_from(["buf", "indexes", "vmcoreinfo"]))
    text = log.vmcoreinfo()
    if target == "buf":
        log.buf[:] = data.draw(mutated(bytes(log.buf), LOG_FIELDS))
    elif target == "indexes":
        for base, buf in list(log.mem.regions.items()):
            if len(buf) <= 8:
                buf[:] = data.draw(mutated(bytes(buf), [(0, len(buf))]))
    else:
        text = data.draw(mutated_text(text.decode(), ["0", "16", "20", "65535", "2147483648"])).encode(
            "utf-8", "surrogateescape")
    run(reader(log.mem, everywhere), text, partial)


@given(log_end=st.integers(0, (1 << 64) - 1), blen=st.integers(-(1 << 31), (1 << 31) - 1),
       release=st.sampled_from(["2.6.18", "3.0.0", "x"]), data=st.binary(max_size=64))
@prop_settings(100)
@example(log_end=33487871, blen=33554432, release="2.6.18", data=b"")  # a 32 MiB log used to be built in memory
def test_plain_log_buf(log_end, blen, release, data):
    mem = FakeMemory()
    mem.map(0xFFFF0000, struct.pack("<Q", 0xFFFF1000))
    mem.map(0xFFFF0010, struct.pack("<i", blen))
    mem.map(0xFFFF0020, struct.pack("<Q", log_end))
    mem.map(0xFFFF1000, data.ljust(64, b"."))
    vi = (f"OSRELEASE={release}\nSYMBOL(log_buf)=ffff0000\nSYMBOL(log_buf_len)=ffff0010\n"
          f"SYMBOL(log_end)=ffff0020\n")
    run(reader(mem, True), vi, False)


# --- regressions found by the properties -----------------------------------------------------------


def test_lockless_walk_over_unused_descriptors_is_bounded():
    """tail..head claiming 2^31 descriptors over memory that reads as zeros (no record in any): the
    walk used to take hours; it now stops after MAX_SKIPPED empty descriptors."""
    from dumpfilter.kernel.dmesg import MAX_SKIPPED, DmesgError

    ring = lockless_ring(1, 4, 9, 20)
    prb = ring.mem.regions[A_PRB]
    struct.pack_into("<I", prb, 0, 31)
    struct.pack_into("<QQ", prb, 24, (1 << 31) - 2, 0)
    struct.pack_into("<I", prb, 48, 31)
    got = bounded(extract, reader(ring.mem, True), VmcoreInfo.parse(ring.vmcoreinfo()), False)
    assert isinstance(got, DmesgError) and f"more than {MAX_SKIPPED}" in str(got)


def test_lockless_descriptors_pointing_at_the_same_text_are_refused():
    """Every descriptor of the ring pointing at one data block as large as the ring: the log would be
    count x the ring (2^count_bits x 2 GiB at most); the records' text may add up to at most twice the
    text ring."""
    from dumpfilter.kernel.dmesg import DmesgError

    ring = lockless_ring(3, 4, 9, 40)
    begin, nxt = 0, ring.size - 8
    for r in ring.live[-ring.count + 1 :]:
        idx = r.id % ring.count
        sv, _, _ = ring.desc(idx)
        struct.pack_into("<QQQ", ring.descs, idx * 24, sv, begin, nxt)
        struct.pack_into("<H", ring.infos, idx * 88 + 16, 0xFFFF)
    got = bounded(extract, reader(ring.mem, True), VmcoreInfo.parse(ring.vmcoreinfo()), False)
    assert isinstance(got, DmesgError) and "adds up to more than twice" in str(got)


def test_printk_log_text_stays_within_its_record():
    """A text_len larger than the record (len = header + text + dict + padding) used to print up to
    64 KiB of what follows for every record; the text is now cut at the record's end."""
    log = printk_log(5, False, 6)
    rec = log.live[0]
    struct.pack_into("<H", log.buf, rec.id + 10, 0xFFFF)  # text_len of the first live record
    rec_len = struct.unpack_from("<H", log.buf, rec.id + 8)[0]
    recs, err = printk_log_records(log.mem.read, VmcoreInfo.parse(log.vmcoreinfo()))
    assert err is None and len(recs) == len(log.live)
    assert recs[0].text == log.buf[rec.id + 16 : rec.id + rec_len]


def test_log_is_written_as_it_is_read():
    """A pre-3.5 log_buf_len claiming 256 MiB over memory that reads (as zeros in a real dump): the
    log was built in memory whole before it was written; with ``write`` it goes out in 1 MiB pieces."""
    mem = FakeMemory()
    mem.map(0xFFFF0000, struct.pack("<Q", 0xFFFF1000))
    mem.map(0xFFFF0010, struct.pack("<i", 1 << 28))
    mem.map(0xFFFF0020, struct.pack("<Q", (1 << 28) - 1))
    vi = VmcoreInfo.parse(b"OSRELEASE=3.0.0\nSYMBOL(log_buf)=ffff0000\nSYMBOL(log_buf_len)=ffff0010\n"
                          b"SYMBOL(log_end)=ffff0020\n")
    got = [0, 0]

    def write(data: bytes) -> None:
        got[0] += len(data)
        got[1] = max(got[1], len(data))

    res = bounded(extract, reader(mem, True), vi, False, write=write)
    assert res.text == b"" and got[0] == (1 << 28) - 1 and got[1] <= 2 << 20
