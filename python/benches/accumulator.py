"""Streaming speed: 1,000,000 x 512 float32 features in batches of 10,000 through
mlab_nc.Accumulator, against numpy computing on the same batches the per-set sums and X^T X
(the work any streaming NC1 needs), side by side, alternating, medians of the rounds.

    python python/benches/accumulator.py [--samples 1000000] [--dim 512] [--batch 10000] [--rounds 3]
    python python/benches/accumulator.py --single    # one batch: median of 15 updates, and numpy's X^T X

Not run in CI. Threads: the accumulator uses rayon's pool (all cores, or RAYON_NUM_THREADS);
numpy's BLAS its own (OPENBLAS_NUM_THREADS).
"""

import argparse
import itertools
import statistics
import time

import numpy as np

import mlab_nc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--single", action="store_true", help="time one batch's update (15 times) against numpy's X^T X on it")
    a = ap.parse_args()
    if a.single:
        a.samples = a.batch
    k, d = a.classes, a.dim
    sets = [(c,) for c in range(k)] + list(itertools.combinations(range(k), 2))
    rng = np.random.default_rng(0)
    which = rng.integers(len(sets), size=a.samples)
    labels = np.zeros((a.samples, k), dtype=np.float32)
    for j, s in enumerate(sets):
        labels[np.ix_(which == j, list(s))] = 1.0
    features = (rng.standard_normal((a.samples, d), dtype=np.float32) + 3.0).astype(np.float32)
    starts = range(0, a.samples, a.batch)
    if a.single:
        acc, x, y = mlab_nc.Accumulator(k, d), features[: a.batch], labels[: a.batch]
        ups, grams = [], []
        for _ in range(15):
            t = time.perf_counter()
            acc.update(x, y)
            ups.append(time.perf_counter() - t)
            t = time.perf_counter()
            x.T @ x
            grams.append(time.perf_counter() - t)
        print(f"one {a.batch} x {d} float32 batch: update {1e3 * statistics.median(ups):.1f} ms, numpy float32 X^T X {1e3 * statistics.median(grams):.1f} ms (medians of 15)")
        return

    def accumulator():
        acc = mlab_nc.Accumulator(k, d)
        for s in starts:
            acc.update(features[s : s + a.batch], labels[s : s + a.batch])
        return acc.result()

    def numpy_f32():
        sums = np.zeros((len(sets), d), dtype=np.float32)
        gram = np.zeros((d, d), dtype=np.float32)
        for s in starts:
            x = features[s : s + a.batch]
            onehot = np.zeros((len(x), len(sets)), dtype=np.float32)
            onehot[np.arange(len(x)), which[s : s + a.batch]] = 1.0
            sums += onehot.T @ x
            gram += x.T @ x
        return sums, gram

    def numpy_f64():
        sums = np.zeros((len(sets), d))
        gram = np.zeros((d, d))
        for s in starts:
            x = features[s : s + a.batch].astype(np.float64)
            onehot = np.zeros((len(x), len(sets)))
            onehot[np.arange(len(x)), which[s : s + a.batch]] = 1.0
            sums += onehot.T @ x
            gram += x.T @ x
        return sums, gram

    runs = {"mlab_nc.Accumulator (float64)": accumulator, "numpy float32 (sums, X^T X)": numpy_f32, "numpy float64 (sums, X^T X)": numpy_f64}
    times = {name: [] for name in runs}
    for _ in range(a.rounds):
        for name, f in runs.items():
            t = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t)
    base = statistics.median(times["mlab_nc.Accumulator (float64)"])
    print(f"{a.samples} x {d} float32 in batches of {a.batch}, K = {k}, {len(sets)} label sets; medians of {a.rounds} rounds")
    for name, ts in times.items():
        m = statistics.median(ts)
        print(f"  {name:32s} {m:7.2f} s   accumulator / this = {base / m:.2f}")


if __name__ == "__main__":
    main()
