"""Owner-partitioned routing, simulated with the service's own store (prints Markdown tables).

    python bench/bench_owner_routing.py [--owners-per-shard 1000] [--shards 1,2,4,8]

Past one host, the index is split by owner: each owner's vectors live on exactly one shard
(``shard_of``: a stable hash of the owner id, modulo the number of shards), and a query goes to
that shard only, where ``OwnerVectorStore.search`` scans that owner's vectors and nobody
else's (docs/scaling.md). Here every shard is an ``OwnerVectorStore`` saved to its own segment
and mapped back (as an app process serves it), all in this process; a query picks an owner
uniformly at random, is routed, and is timed against raw FAISS on the same owner's index (the
same memory, without the store: routing, lookup and the ``(id, score)`` list). Two ways to
grow: more shards with the same owners each (scale-out: the cost per query must stay flat), and
one shard with more owners (the cost must not depend on how many owners share a shard either).

Owner sizes follow docs/scaling.md's assumption: lognormal, mean 100 vectors (10^9 vectors for
10^7 users), sigma 1 (median 61), at least 1 and at most 20,000.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import xxhash

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.ml.vector_store import OwnerVectorStore, _search  # noqa: E402

K = 5
MEAN_VECTORS = 100
SIGMA = 1.0
MAX_VECTORS = 20_000


def owner_sizes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Vectors per owner: lognormal with mean ``MEAN_VECTORS`` (so mu = ln(mean) - sigma^2/2)."""
    mu = np.log(MEAN_VECTORS) - SIGMA**2 / 2
    return np.clip(np.rint(rng.lognormal(mu, SIGMA, n)), 1, MAX_VECTORS).astype(np.int64)


def shard_of(owner_id: int, shards: int) -> int:
    """The shard holding ``owner_id``: a hash that every process computes alike (Python's
    ``hash`` of an int is the int itself: consecutive ids would still spread, but a hash keeps
    the spread even for ids handed out in strides)."""
    return xxhash.xxh3_64_intdigest(owner_id.to_bytes(8, "little")) % shards


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


class Router:
    """Shards built from ``sizes`` (owner i + 1 holds ``sizes[i]`` vectors), each saved and
    mapped back from its own folder under ``root``."""

    def __init__(self, sizes: np.ndarray, shards: int, dim: int, root: Path, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.shards = shards
        built = [OwnerVectorStore(dim, "bench:random") for _ in range(shards)]
        next_id = 1
        for owner, size in enumerate(sizes.tolist(), start=1):
            ids = np.arange(next_id, next_id + size, dtype=np.int64)
            built[shard_of(owner, shards)].add(owner, ids, unit(rng, size, dim))
            next_id += size
        self.stores = []
        #: Seconds to map each shard (``load``, checksums included), as an app start does.
        self.load_s: list[float] = []
        for i, store in enumerate(built):
            folder = root / f"shard-{i}"
            store.save(folder)
            began = time.perf_counter()
            self.stores.append(OwnerVectorStore.load(folder))
            self.load_s.append(time.perf_counter() - began)
        del built
        gc.collect()

    def search(self, owner: int, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        return self.stores[shard_of(owner, self.shards)].search(owner, queries, k)

    def raw(self, owner: int, queries: np.ndarray, k: int) -> None:
        """Raw FAISS on the owner's own index (same memory, nothing around it)."""
        entry = self.stores[shard_of(owner, self.shards)]._owners[owner]
        _search(entry.index, queries, queries.shape[0], min(k, entry.ids.size))


def measure(router: Router, owners: int, calls: int, dim: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed + 1)
    picks = rng.integers(1, owners + 1, size=calls)
    queries = unit(rng, calls, dim)
    ours: list[float] = []
    raw: list[float] = []
    perf = time.perf_counter
    for i in range(min(200, calls)):  # warm-up
        router.search(int(picks[i]), queries[i : i + 1], K)
    for i, owner in enumerate(picks.tolist()):
        q = queries[i : i + 1]
        if i % 2:
            t = perf()
            router.search(owner, q, K)
            ours.append(perf() - t)
        t = perf()
        router.raw(owner, q, K)
        raw.append(perf() - t)
        if not i % 2:
            t = perf()
            router.search(owner, q, K)
            ours.append(perf() - t)
    us = lambda xs, p: float(np.percentile(xs, p)) * 1e6  # noqa: E731
    return {
        "ours50": us(ours, 50), "ours95": us(ours, 95), "raw50": us(raw, 50), "raw95": us(raw, 95),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--owners-per-shard", type=int, default=1000)
    parser.add_argument("--shards", default="1,2,4,8", help="shard counts (scale-out rows)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--calls", type=int, default=20_000, help="queries per row")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shard_counts = [int(s) for s in args.shards.split(",") if s]
    most = max(shard_counts) * args.owners_per_shard
    sizes = owner_sizes(most, np.random.default_rng(args.seed))
    print(
        f"faiss {faiss.__version__}, omp threads {faiss.omp_get_max_threads()}, dim {args.dim}, "
        f"k {K}; owner sizes: mean {sizes.mean():.0f}, median {np.median(sizes):.0f}, "
        f"p99 {np.percentile(sizes, 99):.0f}, max {sizes.max()}"
    )
    rows: list[str] = []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        layouts = [("scale-out", s, s * args.owners_per_shard) for s in shard_counts]
        layouts += [("one shard", 1, s * args.owners_per_shard) for s in shard_counts if s > 1]
        for label, shards, owners in layouts:
            root = Path(tmp) / f"{label}-{shards}-{owners}"
            t = time.perf_counter()
            router = Router(sizes[:owners], shards, args.dim, root, args.seed)
            build_s = time.perf_counter() - t
            per_shard = [s.count() for s in router.stores]
            m = measure(router, owners, args.calls, args.dim, args.seed)
            rows.append(
                f"| {label} | {shards} | {owners:,} | {sum(per_shard):,} "
                f"| {min(per_shard):,} - {max(per_shard):,} "
                f"| {m['ours50']:.1f} / {m['ours95']:.1f} "
                f"| {m['raw50']:.1f} / {m['raw95']:.1f} "
                f"| **{m['ours50'] / m['raw50']:.2f} / {m['ours95'] / m['raw95']:.2f}** "
                f"| {1e6 * max(router.load_s) / max(owners // shards, 1):.0f} | {build_s:.0f} |"
            )
            del router
            gc.collect()
    print(f"\n### Routed owner-scoped search, 1 query, k={K} (us per call, p50 / p95)\n")
    print(
        "| growth | shards | owners | vectors | vectors per shard (min - max) "
        "| routed (ours) | raw faiss, same owner index | ratio "
        "| map one shard (us per owner, slowest shard) | build + save + map (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
