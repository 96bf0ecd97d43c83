#!/usr/bin/env python3
"""A word count done the serverless way, on Mayfly, from Python.

The Python twin of bench/wordcount.c. The driver puts the input text into a
file namespace, then runs a map stage and a reduce stage as separate
multiprocessing processes, which share nothing but Mayfly:
  mapper i    reads its slice of /wordcount/<run>/input, counts words, stores
              the counts in the kv namespace /wordcount/<run>/map-<i>, and
              pushes each distinct word onto the queue /wordcount/<run>/keys-<r>
              of the reducer r that owns it (a hash of the word mod reducers);
  reducer r   pops its words, sums each word's count over every mapper's kv
              namespace (one get_many per word), and pushes "count word" onto
              /wordcount/<run>/results.
The driver pops the results, prints the top words, checks them against a
count of its own, and removes /wordcount/<run>. Exit status 0 only when every
count matches.

  PYTHONPATH=python python3 python/examples/wordcount.py --directory HOST:PORT
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import random
import re
import sys
import zlib

import mayfly

WORD = re.compile(rb"[A-Za-z0-9']+")


def make_text(nwords: int) -> bytes:
    """Made-up text: syllable words, Zipf-like so some words are common."""
    rng = random.Random(42)
    syl = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pe", "da"]
    vocab = [syl[i % 10] + syl[(i // 10) % 10] + (syl[i // 100] if i >= 100 else "")
             for i in range(1000)]
    weights = [1.0 / (i + 1) for i in range(len(vocab))]
    words = rng.choices(vocab, weights, k=nwords)
    lines = [" ".join(words[i:i + 12]) for i in range(0, nwords, 12)]
    return ("\n".join(lines) + "\n").encode()


def owner(word: bytes, reducers: int) -> int:
    return zlib.crc32(word) % reducers


def mapper(directory: str, run: str, i: int, mappers: int, reducers: int) -> str:
    with mayfly.connect(directory) as c:
        f = c.mount(f"/wordcount/{run}/input", kind="file")
        size = f.size()
        lo, hi = size * i // mappers, size * (i + 1) // mappers
        # A word belongs to the slice it starts in: read from one byte before
        # the slice (to see whether its first word started earlier) to past its
        # end until the last word is complete.
        base = max(lo - 1, 0)
        f.seek(base)
        data = f.read(hi - base)
        while True:
            more = f.read(256)
            if not more:
                break
            m = re.search(rb"[^A-Za-z0-9']", more)
            data += more[:m.start()] if m else more
            if m:
                break
        counts = collections.Counter(
            m.group() for m in WORD.finditer(data) if lo <= base + m.start() < hi)
        kv = c.mount(f"/wordcount/{run}/map-{i}", kind="kv", blocks=2)
        kv.put_many({w: str(n) for w, n in counts.items()})
        queues = [c.mount(f"/wordcount/{run}/keys-{r}", kind="queue") for r in range(reducers)]
        by_reducer = collections.defaultdict(list)
        for w in counts:
            by_reducer[owner(w, reducers)].append(w)
        for r, ws in by_reducer.items():
            queues[r].push_many(ws)
        return f"  mapper {i}: bytes [{lo}, {hi}), {len(counts)} distinct words"


def reducer(directory: str, run: str, r: int, mappers: int) -> str:
    with mayfly.connect(directory) as c:
        q = c.mount(f"/wordcount/{run}/keys-{r}", kind="queue")
        maps = [c.mount(f"/wordcount/{run}/map-{i}", kind="kv") for i in range(mappers)]
        results = c.mount(f"/wordcount/{run}/results", kind="queue")
        seen = set()
        while True:
            words = q.pop_many(256)
            if not words:
                break
            lines = []
            for w in words:
                if w in seen:  # pushed by several mappers
                    continue
                seen.add(w)
                total = sum(int(v) for m in maps for v in m.get_many([w]) if v is not None)
                lines.append(b"%d %s" % (total, w))
            results.push_many(lines)
        return f"  reducer {r}: {len(seen)} words"


def main() -> int:
    ap = argparse.ArgumentParser(description="A serverless-style word count on Mayfly.")
    ap.add_argument("--directory", "-d", default=None, help="HOST:PORT (default $MAYFLY_DIRECTORY)")
    ap.add_argument("--mappers", "-m", type=int, default=4)
    ap.add_argument("--reducers", "-r", type=int, default=2)
    ap.add_argument("--words", "-w", type=int, default=200_000)
    ap.add_argument("--input", "-i", help="count this file instead")
    ap.add_argument("--top", "-t", type=int, default=10)
    a = ap.parse_args()
    if min(a.mappers, a.reducers, a.words, a.top) < 1:
        ap.error("counts must be positive")
    directory = a.directory or os.environ.get("MAYFLY_DIRECTORY", "127.0.0.1:9090")
    run = f"py-run-{os.getpid()}"
    text = open(a.input, "rb").read() if a.input else make_text(a.words)

    with mayfly.connect(directory) as c:
        f = c.mount(f"/wordcount/{run}/input", kind="file")
        f.write(text)
        print(f"word count {run}: {len(text)} bytes of input in /wordcount/{run}/input over "
              f"{len(f.stat().partitions)} blocks")
        for r in range(a.reducers):
            c.create(f"/wordcount/{run}/keys-{r}", kind="queue")
        c.create(f"/wordcount/{run}/results", kind="queue")
        # Processes of their own, as functions would be: spawn, not fork.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(max(a.mappers, a.reducers)) as pool:
            print(f"map stage: {a.mappers} processes")
            for line in pool.starmap(mapper, [(directory, run, i, a.mappers, a.reducers)
                                              for i in range(a.mappers)]):
                print(line)
            print(f"reduce stage: {a.reducers} processes")
            for line in pool.starmap(reducer, [(directory, run, r, a.mappers)
                                               for r in range(a.reducers)]):
                print(line)
        results = c.mount(f"/wordcount/{run}/results", kind="queue")
        got = {}
        while True:
            batch = results.pop_many(1024)
            if not batch:
                break
            for line in batch:
                n, w = line.split(b" ", 1)
                got[w] = int(n)
        expected = collections.Counter(WORD.findall(text))
        top = sorted(got.items(), key=lambda kv: (-kv[1], kv[0]))[:a.top]
        print(f"top {a.top} words of {len(got)} distinct:")
        for w, n in top:
            print(f"  {n:8d}  {w.decode(errors='replace')}")
        ok = got == dict(expected)
        print("verified: every count matches a local count of the input" if ok else
              f"MISMATCH: {sum(1 for w in set(got) | set(expected) if got.get(w) != expected.get(w))}"
              " words differ")
        f.close()
        c.remove(f"/wordcount/{run}", recursive=True)
        print(f"removed /wordcount/{run}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
