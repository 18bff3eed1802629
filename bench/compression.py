"""Compression per transport level 0-7: ratio and throughput on two replication streams.

    python bench/compression.py [--mb 16] [--seed 1]

What it measures is what a sender does: real transaction payloads (``codec.encode_transaction``)
batched into DATA frames of ``TransportSettings.batch_bytes`` (1 MiB raw) and framed by
``FrameEncoder`` with ``compression_for(level)``; then the receiver's ``FrameDecoder``.  Level 0
is the peer measured in the same run (framing and checksums only), so the MB/s columns compare
levels on this machine rather than promise absolute numbers.

Streams:

* ``pgbench``: the tpcb-like transaction as capture sees it — UPDATE of pgbench_accounts (84-byte
  blank filler), tellers, branches, INSERT into pgbench_history — with random keys and deltas;
* ``text``: document rows (title, ~1-3 kB of word salad from a 2,000-word vocabulary, tags,
  jsonb metadata), the kind of payload where the strong levels earn their CPU.

MB/s are raw (uncompressed) megabytes per second, single thread, one connection.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hodr.position import LogPosition  # noqa: E402
from hodr.redo.records import Column, Op, RowChange, Table  # noqa: E402
from hodr.replicate.codec import (  # noqa: E402
    ZSTD_LEVELS,
    Data,
    FrameDecoder,
    FrameEncoder,
    compression_for,
    encode_transaction,
)
from hodr.replicate.transaction import Transaction  # noqa: E402
from hodr.replicate.transport import TransportSettings  # noqa: E402


def _table(name: str, cols: list[tuple[str, str]]) -> Table:
    return Table("public", name, tuple(Column(n, t, key=(i == 0)) for i, (n, t) in enumerate(cols)))


ACCOUNTS = _table(
    "pgbench_accounts",
    [("aid", "integer"), ("bid", "integer"), ("abalance", "integer"), ("filler", "bpchar")],
)
TELLERS = _table(
    "pgbench_tellers", [("tid", "integer"), ("bid", "integer"), ("tbalance", "integer"), ("filler", "bpchar")]
)
BRANCHES = _table("pgbench_branches", [("bid", "integer"), ("bbalance", "integer"), ("filler", "bpchar")])
HISTORY = _table(
    "pgbench_history",
    [
        ("tid", "integer"),
        ("bid", "integer"),
        ("aid", "integer"),
        ("delta", "integer"),
        ("mtime", "timestamp"),
        ("filler", "bpchar"),
    ],
)
DOCS = _table(
    "demo_docs",
    [
        ("id", "bigint"),
        ("title", "varchar"),
        ("body", "text"),
        ("tags", "text[]"),
        ("meta", "jsonb"),
        ("seen", "timestamptz"),
    ],
)


def pgbench_stream(rng: random.Random) -> Iterator[Transaction]:
    i = 0
    while True:
        i += 1
        aid, tid, bid = rng.randint(1, 100_000), rng.randint(1, 10), 1
        delta = rng.randint(-5000, 5000)
        h, m, sec, us = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999999)
        mtime = f"2026-01-01 {h:02d}:{m:02d}:{sec:02d}.{us:06d}"
        changes = (
            RowChange(
                Op.UPDATE, ACCOUNTS, None, (str(aid), str(bid), str(rng.randint(-99999, 99999)), " " * 84)
            ),
            RowChange(Op.UPDATE, TELLERS, None, (str(tid), str(bid), str(rng.randint(-99999, 99999)), None)),
            RowChange(Op.UPDATE, BRANCHES, None, (str(bid), str(rng.randint(-999999, 999999)), None)),
            RowChange(Op.INSERT, HISTORY, None, (str(tid), str(bid), str(aid), str(delta), mtime, None)),
        )
        pos = LogPosition(1, 0x1000000 + 400 * i)
        yield Transaction(i, pos, pos, 1_700_000_000_000_000 + i * 997, changes)


def text_stream(rng: random.Random) -> Iterator[Transaction]:
    vocab = [
        "".join(rng.choice("etaoinshrdlucmfwypvbgkjqxz") for _ in range(rng.randint(2, 11)))
        for _ in range(2000)
    ]
    weights = [1.0 / (k + 1) for k in range(len(vocab))]  # Zipf-like, as in real prose
    i = 0
    while True:
        i += 1
        rows = []
        for j in range(rng.randint(1, 3)):
            words = rng.choices(vocab, weights, k=rng.randint(150, 450))
            body = " ".join(words).capitalize() + "."
            title = " ".join(rng.choices(vocab, weights, k=rng.randint(3, 8))).title()
            tags = "{" + ",".join(rng.sample(vocab[:200], 3)) + "}"
            meta = f'{{"author": "{rng.choice(vocab)}", "rev": {rng.randint(1, 40)}, "lang": "en"}}'
            seen = f"2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} 1{rng.randint(0, 9)}:00:00+00"
            rows.append(RowChange(Op.INSERT, DOCS, None, (str(i * 10 + j), title, body, tags, meta, seen)))
        pos = LogPosition(1, 0x1000000 + 4000 * i)
        yield Transaction(i, pos, pos, 1_700_000_000_000_000 + i * 997, tuple(rows))


def batches(stream: Iterator[Transaction], total: int, batch: int) -> list[Data]:
    """DATA frames of about ``batch`` raw bytes, ``total`` raw bytes in all."""
    out: list[Data] = []
    recs: list[bytes] = []
    size = done = 0
    seq = 1
    for txn in stream:
        payload = encode_transaction(txn)
        recs.append(payload)
        size += len(payload)
        if size >= batch:
            out.append(Data(seq, tuple(recs)))
            seq += len(recs)
            done += size
            recs, size = [], 0
            if done >= total:
                break
    return out


def measure(frames: list[Data], level: int) -> tuple[float, float, float]:
    """(ratio raw/wire, compress MB/s, decompress MB/s)."""
    enc = FrameEncoder(compression_for(level))
    t0 = time.perf_counter()
    wire = [enc.encode(f) for f in frames]
    t1 = time.perf_counter()
    dec = FrameDecoder("bench")
    for w in wire:
        dec.feed(w)
        frame = dec.next_frame()
        assert frame is not None
        dec.decode(frame)
    t2 = time.perf_counter()
    raw = enc.raw_bytes
    return raw / enc.wire_bytes, raw / (t1 - t0) / 1e6, raw / (t2 - t1) / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=16.0, help="raw MiB per stream (default 16)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    batch = TransportSettings().batch_bytes
    total = int(args.mb * (1 << 20))
    print(f"raw {args.mb:g} MiB per stream, DATA frames of {batch >> 10} KiB raw, one thread")
    print(f"{'stream':<8} {'level':>5} {'zstd':>5} {'ratio':>7} {'comp MB/s':>10} {'decomp MB/s':>12}")
    for name, gen in (("pgbench", pgbench_stream), ("text", text_stream)):
        frames = batches(gen(random.Random(args.seed)), total, batch)
        for level in range(8):
            ratio, c, d = measure(frames, level)
            zstd = "-" if level == 0 else str(ZSTD_LEVELS[level])
            print(f"{name:<8} {level:>5} {zstd:>5} {ratio:>7.2f} {c:>10.0f} {d:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
