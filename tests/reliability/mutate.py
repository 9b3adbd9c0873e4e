"""Mutation run over real modules' bitcode: bit flips, byte writes, truncations, and
structure-aware edits (records dropped, duplicated, swapped or spliced inside a block; whole
blocks replaced by another block of the same kind, from the same or another module, or
emptied, with the enclosing blocks' lengths fixed up so the stream stays well formed).

Every mutant is loaded by a worker process; the supervisor (this script) counts what the
worker reports, and a worker that dies or hangs is a crash or a timeout: the input is kept
under target/reliability/mutate-findings/ and a new worker takes over.

    python tests/reliability/mutate.py --count 10000 --mode library   # engine API, in-process
    python tests/reliability/mutate.py --count 10000 --mode import    # import path, isolated

Seeds: the corpus packages' .bc files (`make corpus` leaves them in ~/.cache/jitload-corpus;
JITLOAD_CORPUS_DIR moves it) up to --max-seed-kb, else the checked-in seed sources.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bitstream  # noqa: E402
import common  # noqa: E402

KINDS = ["flip", "bytes", "trunc", "splice_bytes", "record_drop", "record_dup", "record_swap", "record_splice",
         "block_splice", "block_donor", "block_empty"]


# -- mutations ---------------------------------------------------------------------------


class Seed:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        self.layout = bitstream.parse(self.data)
        self.leaves = [b for b in self.layout.blocks if not any(o is not b and b.body < o.start and o.end <= b.end for o in self.layout.blocks)]

    def records_in(self, block: bitstream.Block) -> List[bitstream.Record]:
        return [r for r in self.layout.records if block.body < r.start and r.end <= block.end]


def _fix_ancestors(data: bytes, layout: bitstream.Layout, target: bitstream.Block, delta_words: int) -> bytes:
    if delta_words == 0:
        return data
    out = bytearray(data)
    for b in layout.blocks:
        if b is not target and b.body < target.start and target.end <= b.end:
            at = b.body // 8
            words = int.from_bytes(out[at : at + 4], "little") + delta_words
            out[at : at + 4] = (words & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(out)


def _rebuild_leaf(seed: Seed, block: bitstream.Block, content: int, content_len: int) -> bytes:
    """Replaces the leaf block's body with `content` (records, no END_BLOCK) and a fresh
    END_BLOCK, length word and alignment; fixes the enclosing blocks' lengths."""
    body_bits = content_len + block.width  # END_BLOCK id is 0
    body_bits = (body_bits + 31) & ~31
    words = body_bits // 32
    new_body = words | (content << 32)  # length word, then content, END_BLOCK zeros, padding
    old_words = (block.end - block.body) // 32
    data = bitstream.replace_bits(seed.data, block.body, block.end, new_body, 32 + body_bits)
    return _fix_ancestors(data, seed.layout, block, (words + 1) - old_words)


def _record_edit(seed: Seed, rng: random.Random, kind: str) -> Optional[bytes]:
    leaves = [b for b in seed.leaves if len(seed.records_in(b)) >= 2]
    if not leaves:
        return None
    block = rng.choice(leaves)
    recs = seed.records_in(block)
    v = bitstream.to_bits(seed.data)
    pieces: List[Tuple[int, int]] = [(bitstream.cut(v, r.start, r.end), r.end - r.start) for r in recs]
    i, j = rng.randrange(len(pieces)), rng.randrange(len(pieces))
    if kind == "record_drop":
        del pieces[i]
    elif kind == "record_dup":
        pieces.insert(i, pieces[i])
    elif kind == "record_swap":
        pieces[i], pieces[j] = pieces[j], pieces[i]
    else:  # record_splice: a record of another block of the same kind in this module
        same = [b for b in seed.leaves if b.block_id == block.block_id and b is not block] or [block]
        donor = rng.choice([r for b in same for r in seed.records_in(b)] or recs)
        pieces[i] = (bitstream.cut(v, donor.start, donor.end), donor.end - donor.start)
    # Records before the first one kept as they were (abbrev definitions are records too).
    content, length = 0, 0
    first = recs[0].start
    lead = first - (block.body + 32)
    content, length = bitstream.cut(v, block.body + 32, first), lead
    for bits, n in pieces:
        content |= bits << length
        length += n
    return _rebuild_leaf(seed, block, content, length)


def _block_edit(seed: Seed, rng: random.Random, kind: str, donors: List[Seed]) -> Optional[bytes]:
    blocks = [b for b in seed.layout.blocks if b.depth > 0]
    if not blocks:
        return None
    target = rng.choice(blocks)
    old_words = (target.end - target.body) // 32
    if kind == "block_empty":
        words = ((target.width + 31) & ~31) // 32
        new = words.to_bytes(4, "little") + bytes(4 * words)
        new_words = words + 1
    else:
        pool = [seed] if kind == "block_splice" else donors
        candidates = [(s, b) for s in pool for b in s.layout.blocks
                      if b.block_id == target.block_id and b.width == target.width and b is not target]
        if not candidates:
            return None
        src, b = rng.choice(candidates)
        new = src.data[b.body // 8 : b.end // 8]
        new_words = (b.end - b.body) // 32
    data = seed.data[: target.body // 8] + new + seed.data[target.end // 8 :]
    return _fix_ancestors(data, seed.layout, target, new_words - old_words)


def mutate(seed: Seed, rng: random.Random, kind: str, donors: List[Seed]) -> Optional[bytes]:
    b = bytearray(seed.data)
    n = len(b)
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            p = rng.randrange(n)
            b[p] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == "bytes":
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(n)] = rng.choice([0, 0xFF, 0x7F, 0x80, rng.randrange(256)])
        return bytes(b)
    if kind == "trunc":
        ends = [blk.end // 8 for blk in seed.layout.blocks] + [blk.body // 8 + 4 for blk in seed.layout.blocks]
        cut = rng.choice(ends) if ends and rng.random() < 0.5 else rng.randrange(4, n)
        return bytes(b[: max(4, min(cut, n - 1))])
    if kind == "splice_bytes":
        a, c, k = rng.randrange(n), rng.randrange(n), rng.randint(1, 64)
        b[a : a + k] = seed.data[c : c + k]
        return bytes(b)
    if kind.startswith("record_"):
        return _record_edit(seed, rng, kind)
    return _block_edit(seed, rng, kind, donors)


# -- the worker ----------------------------------------------------------------------------

WORKER = r"""
import importlib.machinery, json, os, resource, sys
limit = int(os.environ.get("JITLOAD_MUTATE_AS_MB", "0"))
if limit:
    resource.setrlimit(resource.RLIMIT_AS, (limit << 20, resource.RLIM_INFINITY))
import jitload
from jitload import _native
mode = sys.argv[1]
lib = jitload.Session().library("mutants", opt_level=0, isolate=False) if mode == "library" else None
for line in sys.stdin:
    path, name = json.loads(line)
    try:
        if mode == "library":
            m = lib.add_bitcode(path)
            m.remove()
        else:
            spec = importlib.machinery.ModuleSpec(name, None, origin=path)
            _native.load_extension(path, name, "PyInit_" + name.rpartition(".")[2], spec, opt_level=0, isolate=True)
        outcome = "loaded"
    except Exception as e:
        outcome = type(e).__name__
    sys.stdout.write(json.dumps(outcome) + "\n")
    sys.stdout.flush()
"""


class Worker:
    def __init__(self, mode: str, env: Dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, text=True, bufsize=1,
                                     start_new_session=True)
        self.done = 0

    def run(self, path: str, name: str, timeout: float) -> Tuple[str, str]:
        assert self.proc.stdin and self.proc.stdout
        try:
            self.proc.stdin.write(json.dumps([path, name]) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self.died()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close()
            return "timeout", ""
        line = self.proc.stdout.readline()
        if not line:
            return self.died()
        self.done += 1
        return json.loads(line), ""

    def died(self) -> Tuple[str, str]:
        self.proc.wait()
        err = self.proc.stderr.read() if self.proc.stderr else ""
        rc = self.proc.returncode
        what = f"signal {-rc}" if rc < 0 else f"exit {rc}"
        return f"crash ({what})", err[-2000:]

    def close(self) -> None:
        # The whole group: an isolated compile's child process would outlive the worker.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def module_name(path: Path) -> str:
    return path.name.split(".")[0]


def recheck(args: argparse.Namespace) -> int:
    """Re-runs every recorded finding alone in a fresh worker: a finding whose worker could not
    even start (e.g. the installed wheel was being rebuilt) is re-classified by what the input
    does now; the outcome counts are corrected to match."""
    section = f"mutation_{args.mode}"
    data = json.loads(common.RESULTS.read_text())[section]
    env = dict(os.environ)
    env.update(JITLOAD_MUTATE_AS_MB=str(args.memory_mb), JITLOAD_CACHE="0")
    outcomes = Counter(data["outcomes"])
    confirmed = []
    for f in data["findings"]:
        path = common.ROOT / f["input"]
        seed_name = path.name.split("-", 4)[-1]
        w = Worker(args.mode, env)
        outcome, err = w.run(str(path), module_name(Path(seed_name)), args.timeout)
        w.close()
        now = outcome.split()[0]
        f["recheck"] = outcome
        old = f["outcome"].split()[0]
        if now != old:
            outcomes[old] -= 1
            outcomes[now] += 1
        if now in ("crash", "timeout"):
            f["stderr"] = err[-600:] or f["stderr"]
            confirmed.append(f)
        print(f["input"], f["outcome"], "->", outcome, flush=True)
    data["outcomes"] = {k: v for k, v in outcomes.items() if v}
    data["findings"] = confirmed
    data["crashes"] = outcomes.get("crash", 0)
    data["timeouts"] = outcomes.get("timeout", 0)
    data["rechecked"] = True
    common.merge_results(section, data)
    print(json.dumps({k: data[k] for k in ("outcomes", "crashes", "timeouts")}))
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--mode", choices=["library", "import"], default="library")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-seed-kb", type=int, default=130)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--memory-mb", type=int, default=6144, help="RLIMIT_AS for the worker (0: none)")
    ap.add_argument("--restart-every", type=int, default=400)
    ap.add_argument("--quick", action="store_true", help="do not record figures")
    ap.add_argument("--recheck", action="store_true", help="re-run the recorded findings of --mode in fresh workers")
    args = ap.parse_args()
    if args.recheck:
        return recheck(args)

    seeds_paths = common.corpus_bitcode(max_bytes=args.max_seed_kb * 1024)
    source = "corpus"
    if not seeds_paths:
        source = "checked-in seed sources"
        seeds_paths = [p for p in common.build_seed_modules(common.WORK / "seeds")["bc"] if "-O2" in p.name]
    seeds = [Seed(p) for p in seeds_paths]
    work = common.WORK / f"mutants-{args.mode}"
    work.mkdir(parents=True, exist_ok=True)
    findings = common.WORK / "mutate-findings"
    findings.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(JITLOAD_MUTATE_AS_MB=str(args.memory_mb), JITLOAD_CACHE="0", JITLOAD_CACHE_DIR=str(work / "objcache"))
    outcomes: Counter = Counter()
    by_kind: Dict[str, Counter] = {k: Counter() for k in KINDS}
    bad: List[Dict[str, str]] = []
    worker: Optional[Worker] = None
    start = time.monotonic()
    skipped = 0
    i = 0
    tried = 0
    while tried < args.count:
        rng = random.Random(f"{args.seed}:{i}")
        i += 1
        seed = seeds[rng.randrange(len(seeds))]
        kind = KINDS[i % len(KINDS)]
        data = mutate(seed, rng, kind, seeds)
        if data is None or data == seed.data:
            skipped += 1
            continue
        tried += 1
        path = work / seed.path.name
        path.write_bytes(data)
        if worker is None or worker.done >= args.restart_every or worker.proc.poll() is not None:
            if worker:
                worker.close()
            worker = Worker(args.mode, env)
        outcome, err = worker.run(str(path), module_name(seed.path), args.timeout)
        if outcome.startswith("crash") or outcome == "timeout":
            keep = findings / f"{args.mode}-{outcome.split()[0]}-{kind}-{i}-{seed.path.name}"
            keep.write_bytes(data)
            bad.append({"input": str(keep.relative_to(common.ROOT)), "outcome": outcome, "kind": kind, "stderr": err[-600:]})
            print(f"[{tried}] {outcome}: {kind} of {seed.path.name} -> {keep}", flush=True)
            worker.close()
            worker = None
            outcome = outcome.split()[0]
        outcomes[outcome] += 1
        by_kind[kind][outcome] += 1
        if tried % 500 == 0:
            print(f"[{tried}] {dict(outcomes)} {time.monotonic() - start:.0f}s", flush=True)
    if worker:
        worker.close()
    elapsed = time.monotonic() - start
    figures = {
        "mode": args.mode,
        "mutants": tried,
        "seeds": [p.name for p in seeds_paths],
        "seed_source": source,
        "outcomes": dict(outcomes),
        "by_kind": {k: dict(v) for k, v in by_kind.items()},
        "crashes": outcomes.get("crash", 0),
        "timeouts": outcomes.get("timeout", 0),
        "findings": bad,
        "seconds": round(elapsed, 1),
        "command": f"python tests/reliability/mutate.py --count {args.count} --mode {args.mode} --seed {args.seed}",
    }
    print(json.dumps({k: figures[k] for k in ("mode", "mutants", "outcomes", "crashes", "timeouts", "seconds")}))
    if not args.quick:
        common.merge_results(f"mutation_{args.mode}", figures)
    return 1 if bad else 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.exit(main())
