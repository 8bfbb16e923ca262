"""--dump-dmesg on synthetic printk buffers (fixtures/synthetic_printk.py): the 5.10+ lockless ring
with id and data wrap-around, continuation records, escaping, --partial-dmesg, the 3.5-5.9
printk_log format, the pre-3.5 character ring, and corrupt buffers that must fail fast."""
from __future__ import annotations

import random
import struct

import pytest

from dumpfilter.cli import DumpJob, parse_args
from dumpfilter.errors import DumpfilterError, UsageError
from dumpfilter.kernel.dmesg import DmesgError, Record, extract, format_record
from dumpfilter.kernel.vmcoreinfo import VmcoreInfo
from fixtures.synthetic_printk import (
    A_LOG_BUF,
    A_PRB,
    COMMITTED,
    FINALIZED,
    ID_MASK,
    MASK64,
    RESERVED,
    FakeMemory,
    LocklessRing,
    PrintkLog,
)


def ref_format(ts: int, text: bytes, cid: int | None, signed: bool = True) -> bytes:
    """makedumpfile's dump_record, transcribed byte by byte (independent of the implementation)."""
    head = "[%5d.%06d] " % (ts // 10**9, ts % 10**9 // 1000)
    if cid is not None:
        head += "[%8s] " % (("C%d" if cid & 0x80000000 else "T%d") % (cid & 0x7FFFFFFF))
    out = bytearray(head.encode())
    for b in text:
        if b == 0x0A:
            out += b"\n" + b" " * len(head)
        elif 0x20 <= b <= 0x7E or b in (0x09, 0x0B, 0x0C, 0x0D):
            out.append(b)
        else:
            c = b - 256 if signed and b >= 0x80 else b
            out += ("\\x%02x" % (c & 0xFFFFFFFF)).encode()
    return bytes(out) + b"\n"


def expected(ring, caller: bool = True, since_seq: int | None = None) -> bytes:
    recs = [r for r in ring.live if getattr(r, "state", FINALIZED) in (COMMITTED, FINALIZED)
            and not getattr(r, "dataless", False) and (since_seq is None or r.seq >= since_seq)]
    return b"".join(ref_format(r.ts_nsec, r.text, r.caller_id if caller else None) for r in recs)


READS: list[int] = [0]  # memory reads of the last run_ring/run_log: the work bound of the hang checks


def _counted(read):
    READS[0] = 0

    def wrapped(addr: int, size: int) -> bytes:
        READS[0] += 1
        return read(addr, size)

    return wrapped


def run_ring(ring, partial: bool = False, caller: bool = True, signed: bool = True):
    return extract(_counted(ring.mem.read), VmcoreInfo.parse(ring.vmcoreinfo()), partial, signed, caller)


# --- formatting -----------------------------------------------------------------------------------


def test_prefix_and_caller_column():
    assert format_record(Record(0, b"hi")) == b"[    0.000000] hi\n"
    assert format_record(Record(123_456_789_999, b"x")) == b"[  123.456789] x\n"  # truncated, not rounded
    assert format_record(Record(123456 * 10**9 + 7000, b"x")) == b"[123456.000007] x\n"
    assert format_record(Record(5 * 10**9, b"x", 123)) == b"[    5.000000] [    T123] x\n"
    assert format_record(Record(5 * 10**9, b"x", 0x80000003)) == b"[    5.000000] [      C3] x\n"
    assert format_record(Record(0, b"x", 0x7FFFFFFF)) == b"[    0.000000] [T2147483647] x\n"


def test_escaping_and_continuation_lines():
    text = b"a\nb\tc\x00\x7f\x1b\r\x0b\x0c \xc3\xa9\n"
    assert format_record(Record(0, text)) == (
        b"[    0.000000] a\n               b\tc\\x00\\x7f\\x1b\r\x0b\x0c \\xffffffc3\\xffffffa9\n" + b" " * 15 + b"\n"
    )
    # unsigned char (arm64): two hex digits
    assert format_record(Record(0, b"\xc3\xa9"), signed_char=False) == b"[    0.000000] \\xc3\\xa9\n"
    # the indent covers the caller column too
    assert format_record(Record(0, b"a\nb", 7)) == b"[    0.000000] [      T7] a\n" + b" " * 26 + b"b\n"


@pytest.mark.parametrize("signed", [True, False])
def test_every_byte_value_matches_reference(signed):
    text = bytes(range(256)) * 2
    for cid in (None, 42, 0x80000001):
        assert format_record(Record(987654321012, text, cid), signed) == ref_format(987654321012, text, cid, signed)


# --- lockless ring (5.10+) ------------------------------------------------------------------------


def test_lockless_simple():
    ring = LocklessRing(count_bits=4, size_bits=10)
    for i in range(5):
        ring.printk(b"message %d" % i, i * 1_500_000_000, caller_id=100 + i)
    res = run_ring(ring)
    assert res.kind == "lockless" and res.records == 5 and res.error is None
    assert res.text == expected(ring)
    assert res.text.splitlines()[1] == b"[    1.500000] [    T101] message 1"
    assert run_ring(ring, caller=False).text == expected(ring, caller=False)


@pytest.mark.parametrize("count_bits,size_bits,n,seed", [(2, 7, 50, 1), (4, 9, 300, 2), (5, 8, 1000, 3),
                                                          (6, 12, 2000, 4), (3, 11, 77, 5)])
def test_lockless_wraparound(count_bits, size_bits, n, seed):
    """Descriptor ids wrap past 2^62 (they start at DESC0_ID), data blocks wrap around the text ring,
    and old records are overwritten by both rings' tail pushing."""
    rng = random.Random(seed)
    ring = LocklessRing(count_bits, size_bits)
    maxlen = (1 << size_bits) // 2 - 16
    for i in range(n):
        text = bytes(rng.choice(b"abcdefghij \t\n\x01\xe9") for _ in range(rng.randrange(0, min(maxlen, 90))))
        ring.printk(text, rng.randrange(0, 10**13), caller_id=rng.choice([1, 2, 0x80000000, 0x80000001]))
        if rng.random() < 0.2:
            res = run_ring(ring)
            assert res.text == expected(ring), f"after record {i}"
    assert ring.head_id < (1 << 62) - (1 << count_bits) - 1 or n < (1 << count_bits)  # ids did wrap
    res = run_ring(ring)
    assert res.text == expected(ring)
    assert res.records == len([r for r in ring.live if not r.dataless])


def test_lockless_wrapping_data_block_at_ring_start():
    ring = LocklessRing(count_bits=4, size_bits=8)  # 256-byte text ring
    ring.printk(b"A" * 100, 1)
    ring.printk(b"B" * 100, 2)
    rec = ring.printk(b"C" * 60, 3)  # does not fit behind B: stored at the ring start
    _, begin, nxt = ring.desc(rec.id % ring.count)
    assert begin % 256 > nxt % 256  # a wrapping block
    assert run_ring(ring).text == expected(ring)
    assert [r.text[:1] for r in ring.live] == [b"B", b"C"]


def test_lockless_continuation_records():
    """KERN_CONT fragments are appended to the newest record (data_realloc), also across the ring end."""
    ring = LocklessRing(count_bits=4, size_bits=8)
    ring.printk(b"x" * 90, 1)
    ring.printk(b"start", 2)
    ring.cont(b" more")
    ring.cont(b" and more\nsecond line")
    assert run_ring(ring).text == expected(ring)
    ring.cont(b"-" * 80)  # the grown block no longer fits before the end: it wraps to the start
    out = run_ring(ring).text
    assert out == expected(ring)
    assert b"start more and more\n" + b" " * 26 + b"second line" + b"-" * 80 in out


def test_lockless_states_and_empty_records():
    ring = LocklessRing(count_bits=4, size_bits=10)
    ring.printk(b"one", 1)
    ring.printk(b"", 2)  # data-less (NO_LPOS): makedumpfile prints nothing for it
    ring.printk(b"committed", 3, state=COMMITTED)
    ring.printk(b"being written", 4, state=RESERVED)
    res = run_ring(ring)
    assert res.text == expected(ring)
    assert res.text.count(b"\n") == 2 and b"being written" not in res.text


def test_lockless_truncated_text():
    ring = LocklessRing(count_bits=4, size_bits=10)
    rec = ring.printk(b"0123456789abcdef", 1)
    # text_len claims more than the data block holds: cut at the block end
    struct.pack_into("<H", ring.infos, (rec.id % ring.count) * ring.SZ_INFO + 16, 500)
    assert run_ring(ring).text == b"[    0.000000] [      T1] 0123456789abcdef\n"


def test_lockless_block_ending_exactly_at_ring_end():
    ring = LocklessRing(count_bits=4, size_bits=8)
    rec = ring.printk(b"z" * 16, 1)
    idx = rec.id % ring.count
    sv, begin, _ = ring.desc(idx)
    # move the block to [232, 256): next % size == 0 (makedumpfile would read from the ring start)
    new_begin = (begin & ~255) + 232
    struct.pack_into("<QQQ", ring.descs, idx * 24, sv, new_begin, (new_begin + 24) & MASK64)
    ring.text[232 + 8 : 256] = b"y" * 16
    assert run_ring(ring).text == b"[    0.000000] [      T1] " + b"y" * 16 + b"\n"


@pytest.mark.parametrize("odd", [0, 1])
def test_partial_dmesg(odd):
    ring = LocklessRing(count_bits=4, size_bits=10)
    for i in range(6):
        ring.printk(b"before %d" % i, i)
    ring.latch_odd = odd
    ring.dmesg_clear()
    assert run_ring(ring, partial=True).text == b""  # cleared, nothing since
    for i in range(4):
        ring.printk(b"after %d" % i, 10 + i)
    res = run_ring(ring, partial=True)
    assert res.text == expected(ring, since_seq=ring.clear_seq)
    assert res.records == 4 and b"before" not in res.text
    assert run_ring(ring).text == expected(ring)  # without --partial-dmesg: everything


def test_partial_dmesg_clear_index_above_head_index():
    """clear_seq % count > head % count: makedumpfile starts after head and walks 2^62 ids; we don't."""
    ring = LocklessRing(count_bits=3, size_bits=10)
    for i in range(14):
        ring.printk(b"m%d" % i, i)
    ring.dmesg_clear()
    for i in range(3):
        ring.printk(b"n%d" % i, 100 + i)
    assert ring.clear_seq % 8 > ring.info_seq(ring.head_id % 8) % 8
    res = run_ring(ring, partial=True)
    assert READS[0] < 1000  # bounded by the ring, not by the 2^62 ids a naive walk would take
    assert res.text == expected(ring, since_seq=ring.clear_seq) and res.records == 3


def test_partial_dmesg_clear_point_overwritten():
    ring = LocklessRing(count_bits=3, size_bits=10)
    ring.printk(b"old", 0)
    ring.dmesg_clear()
    for i in range(40):
        ring.printk(b"m%d" % i, i)
    assert run_ring(ring, partial=True).text == expected(ring)  # all that is left is newer


def test_missing_vmcoreinfo_keys_are_named():
    ring = LocklessRing()
    vi = VmcoreInfo.parse(ring.vmcoreinfo(drop=("OFFSET(prb_desc.state_var)", "SIZE(printk_info)")))
    with pytest.raises(DmesgError, match=r"OFFSET\(prb_desc.state_var\).*SIZE\(printk_info\)"):
        extract(ring.mem.read, vi)
    with pytest.raises(DmesgError, match=r"SYMBOL\(prb\) and SYMBOL\(log_buf\)"):
        extract(ring.mem.read, VmcoreInfo.parse(b"OSRELEASE=6.1\n"))


def test_corrupt_head_tail_distance_fails_fast():
    ring = LocklessRing(count_bits=4, size_bits=10)
    for i in range(5):
        ring.printk(b"m", i)
    ring.tail_id = (ring.head_id + 5) & ID_MASK  # tail "after" head: 2^62 - 5 steps for makedumpfile
    ring.flush()
    with pytest.raises(DmesgError, match="corrupt.*ring holds 16"):
        run_ring(ring)


@pytest.mark.parametrize("field,value,match", [(0, 40, "count_bits = 40"), (48, 33, "size_bits = 33")])
def test_corrupt_ring_sizes(field, value, match):
    ring = LocklessRing()
    ring.printk(b"m", 1)
    ring.mem.write(A_PRB + field, struct.pack("<I", value))
    with pytest.raises(DmesgError, match=match):
        run_ring(ring)


def test_unreadable_descriptor_array():
    ring = LocklessRing()
    ring.printk(b"m", 1)
    ring.mem.write(A_PRB + 8, struct.pack("<Q", 0xFFFF888000000000))
    with pytest.raises(DmesgError, match=r"Can't read prb.desc_ring.descs"):
        run_ring(ring)


def test_garbage_rings_never_hang():
    """Random bytes everywhere: every run ends quickly, in output or a DmesgError."""
    rng = random.Random(7)
    for trial in range(300):
        ring = LocklessRing(count_bits=rng.randrange(1, 7), size_bits=rng.randrange(7, 12))
        for i in range(rng.randrange(0, 60)):
            ring.printk(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))), i)
        for buf in (ring.descs, ring.infos, ring.text):
            for _ in range(rng.randrange(0, 40)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        if trial % 3 == 0:
            ring.head_id, ring.tail_id = rng.getrandbits(62), rng.getrandbits(62)
            ring.flush()
        try:
            res = run_ring(ring)
            assert isinstance(res.text, bytes)
        except DmesgError:
            pass
        assert READS[0] < 5000, f"trial {trial}: {READS[0]} reads, the walk is not bounded by the ring"


# --- 3.5 - 5.9: struct printk_log ---------------------------------------------------------------


def run_log(log, partial: bool = False):
    return extract(_counted(log.mem.read), VmcoreInfo.parse(log.vmcoreinfo()), partial)


@pytest.mark.parametrize("caller", [False, True])
def test_printk_log_wraparound(caller):
    rng = random.Random(11)
    log = PrintkLog(buf_len=512, caller=caller)
    wrapped = False
    for i in range(400):
        log.printk(bytes(rng.choice(b"abc \n\x02\xff") for _ in range(rng.randrange(0, 60))), i * 10**7,
                   caller_id=rng.choice([5, 0x80000002]), dict_=b"SUBSYSTEM=x" if i % 3 == 0 else b"")
        wrapped |= log.next_idx < log.first_idx
        if i % 17 == 0:
            res = run_log(log)
            assert res.error is None and res.text == expected(log, caller=caller), f"after record {i}"
    assert wrapped
    res = run_log(log)
    assert res.kind == "printk_log" and res.text == expected(log, caller=caller)


def test_printk_log_partial():
    log = PrintkLog(buf_len=1024)
    for i in range(5):
        log.printk(b"before %d" % i, i)
    log.dmesg_clear()
    for i in range(3):
        log.printk(b"after %d" % i, 10 + i)
    assert run_log(log, partial=True).text == expected(log, caller=False, since_seq=5)


def test_printk_log_cycle_detected():
    log = PrintkLog(buf_len=1024)
    for i in range(6):
        log.printk(b"rec %d" % i, i)
    # record 3 turned into a wrap marker (len 0): 0, 1, 2, 3 -> 0 + len(rec 0) = 1, 2, 3, ... forever
    offs = [r.id for r in log.live]
    struct.pack_into("<H", log.buf, offs[3] + 8, 0)
    res = run_log(log)
    assert READS[0] < 1000
    assert isinstance(res.error, DmesgError) and "cycle" in str(res.error)
    # like makedumpfile: the records up to the corruption, the cycle once (the marker prints rec 0)
    assert res.text == b"".join(b"[    0.000000] rec %d\n" % i for i in (0, 1, 2, 0))


def test_printk_log_index_outside_buffer():
    log = PrintkLog(buf_len=1024)
    for i in range(4):
        log.printk(b"rec %d" % i, i)
    struct.pack_into("<H", log.buf, log.live[1].id + 8, 2000)
    res = run_log(log)
    assert "outside log_buf" in str(res.error) and res.records == 2


def test_printk_log_short_record_length():
    log = PrintkLog(buf_len=1024)
    for i in range(4):
        log.printk(b"rec %d" % i, i)
    struct.pack_into("<H", log.buf, log.live[2].id + 8, 3)
    res = run_log(log)
    assert "shorter than SIZE(printk_log)" in str(res.error) and res.records == 3


def test_garbage_log_buf_never_hangs():
    rng = random.Random(13)
    for trial in range(300):
        log = PrintkLog(buf_len=rng.choice([256, 512, 1024]), caller=bool(trial & 1))
        for i in range(rng.randrange(0, 50)):
            log.printk(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))), i)
        for _ in range(rng.randrange(0, 30)):
            log.buf[rng.randrange(len(log.buf))] = rng.randrange(256)
        if trial % 4 == 0:
            log.first_idx, log.next_idx = rng.randrange(len(log.buf) + 64), rng.randrange(len(log.buf))
            log.flush()
        res = run_log(log)
        assert isinstance(res.text, bytes) and READS[0] < 5000, f"trial {trial}: {READS[0]} reads"


# --- before 3.5: plain characters ------------------------------------------------------------------


@pytest.mark.parametrize("log_end", [5, 3 * 1024 + 3])
def test_plain_log_buf(log_end):
    """< 3.5: the raw characters, oldest first once log_end has passed the buffer size."""
    mem = FakeMemory()
    data = bytearray(b"." * 1024)
    data[0:11] = b"hello world"
    want = b"hello" if log_end < 1024 else bytes(data[3:]) + bytes(data[:3])
    mem.map(A_LOG_BUF, data)
    mem.map(0xFFFFFFFF82000000, struct.pack("<Q", A_LOG_BUF))
    mem.map(0xFFFFFFFF82000010, struct.pack("<i", 1024))
    mem.map(0xFFFFFFFF82000020, struct.pack("<I", log_end))
    vi = VmcoreInfo.parse(b"OSRELEASE=3.2.0\nSYMBOL(log_buf)=ffffffff82000000\nSYMBOL(log_buf_len)=ffffffff82000010\n"
                          b"SYMBOL(log_end)=ffffffff82000020\n")
    res = extract(mem.read, vi)
    assert res.kind == "plain" and res.text == want


# --- command line -------------------------------------------------------------------------------------


def test_cli_dump_dmesg_arguments():
    job = parse_args(["--dump-dmesg", "vmcore", "log.txt"])
    assert isinstance(job, DumpJob) and job.dump_dmesg and not job.partial_dmesg
    assert (job.vmcore, job.dumpfile) == ("vmcore", "log.txt")
    job = parse_args(["vmcore", "--partial-dmesg", "log.txt", "--dump-dmesg", "-f"])
    assert job.dump_dmesg and job.partial_dmesg and job.force
    for bad in (["--partial-dmesg", "a", "b"], ["--dump-dmesg", "a"], ["--dump-dmesg", "a", "b", "c"],
                ["--dump-dmesg", "--dry-run", "a", "b"], ["--dump-dmesg", "-F", "a"]):
        with pytest.raises(UsageError):
            parse_args(bad)


def test_cli_help_mentions_dump_dmesg():
    text = parse_args(["-h"])
    assert "--dump-dmesg" in text and "--partial-dmesg" in text


def test_errors_are_dumpfilter_errors():
    assert issubclass(DmesgError, DumpfilterError)
