#!/usr/bin/env python3
"""PyTorch L-BFGS on the same UFM problems, timed to the same relative gap (optional; not in CI).

Usage: python3 experiments/pytorch_lbfgs.py [--presets A,B,C,D,E] [--repeat 5] [--threads 2]
       [--binary target/release/mlab-nc] [--end-to-end] [--config K,M,d,per,lambda ...]

With --end-to-end, mlab-nc's time is the whole `mlab-nc ufm --seed r` process at default flags,
writing --json (predict, solve with the certified stop, measure, certify, judge), not the solve
alone; the two programs then alternate seed by seed (r = 0 .. repeat-1, a pause of --pause
seconds before each mlab-nc run), so both medians cover the same starts count and the same
stretch of the machine's time.
--config adds problems beyond the presets (e.g. --config 10,3,10,1,1e-6).

Same objective as mlab-nc (float64, PAL loss, lambda_w = lambda_h = lambda_b, N(0, 0.1^2) start),
torch.optim.LBFGS with history 20 and the strong-Wolfe line search, stopped as soon as the
objective is within GAP of the optimum the theorem predicts (read from `mlab-nc predict`).
Prints the median wall time per preset, and, next to it, mlab-nc's median from `mlab-nc timing`.
"""
import argparse
import itertools
import json
import re
import statistics
import subprocess
import time

import torch

PRESETS = {  # K, M, d, per set, lambda
    "A": (4, 2, 8, 5, 5e-3),
    "B": (10, 3, 16, 2, 2e-3),
    "C": (20, 3, 32, 2, 1e-3),
    "D": (50, 3, 64, 1, 2e-4),
    "E": (100, 2, 128, 2, 2e-4),
    "scale": (100, 3, 100, 1, 5e-5),
}


def predicted_optimum(binary, k, m, d, per, lam):
    out = subprocess.run(
        [binary, "predict", "--classes", str(k), "--max-labels", str(m), "--dim", str(d), "--per-set", str(per),
         "--lambda-w", str(lam), "--lambda-h", str(lam), "--lambda-b", str(lam)],
        check=True, capture_output=True, text=True).stdout
    return float(re.search(r"f\* = ([0-9.eE+-]+)", out).group(1))


def problem(k, m, per):
    sets = [s for size in range(1, m + 1) for s in itertools.combinations(range(k), size)]
    rows = [s for s in sets for _ in range(per)]
    n = len(rows)
    y = torch.zeros(n, k, dtype=torch.float64)
    for i, s in enumerate(rows):
        y[i, list(s)] = 1.0
    return y


class _Reached(Exception):
    """Raised from the closure at the first evaluation that reaches the target."""


def solve(k, d, y, lam, target, seed, max_iters=5000):
    """One solve; returns (seconds, iterations, evaluations).

    A single `opt.step` runs the whole solve, and the closure itself checks each value it
    computes against the target, so PyTorch does no work beyond its own iterations. (Calling
    `opt.step` once per iteration with `max_iter=1` would cost a redundant evaluation per
    call, because every call re-evaluates the point the previous line search ended on; an
    extra forward pass to test the target would cost more again. Neither is charged here.)
    """
    torch.manual_seed(seed)
    n = y.shape[0]
    w = (0.1 * torch.randn(k, d, dtype=torch.float64)).requires_grad_()
    h = (0.1 * torch.randn(n, d, dtype=torch.float64)).requires_grad_()
    b = (0.1 * torch.randn(k, dtype=torch.float64)).requires_grad_()
    mult = y.sum(1)
    opt = torch.optim.LBFGS([w, h, b], lr=1, max_iter=max_iters, max_eval=30 * max_iters, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=0, tolerance_change=0)
    evals = [0]

    def closure():
        opt.zero_grad()
        z = h @ w.T + b
        lse = torch.logsumexp(z, dim=1)
        loss = (mult * lse - (y * z).sum(1)).mean()
        f = loss + 0.5 * lam * (w.pow(2).sum() + h.pow(2).sum() + b.pow(2).sum())
        f.backward()
        evals[0] += 1
        if f.item() <= target:
            raise _Reached
        return f

    t0 = time.perf_counter()
    try:
        opt.step(closure)
    except _Reached:
        return time.perf_counter() - t0, opt.state[w]["n_iter"], evals[0]
    return float("nan"), max_iters, evals[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="A,B,C,D,E")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gap", type=float, default=1e-10)
    ap.add_argument("--binary", default="target/release/mlab-nc")
    ap.add_argument("--end-to-end", action="store_true")
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--max-iters", type=int, default=5000)
    ap.add_argument("--pause", type=float, default=1.0, help="seconds between runs with --end-to-end")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    names = [n for n in a.presets.split(",") if n]
    for c in a.config:
        k, m, d, per, lam = c.split(",")
        PRESETS[c] = (int(k), int(m), int(d), int(per), float(lam))
        names.append(c)
    if a.end_to_end:
        end_to_end(a, names)
        return
    # mlab-nc first, before torch starts its thread pool (idle OpenMP threads spin and would
    # steal the cores from a process started right after).
    ours = {}
    for name in names:
        out = subprocess.run([a.binary, "--threads", str(a.threads), "timing", "--preset", name, "--repeat", str(a.repeat),
                              "--gap", str(a.gap)], check=True, capture_output=True, text=True).stdout
        ours[name] = float(out.strip().splitlines()[-1].split()[1])
    print(f"{'preset':>6} {'torch s':>10} {'iters':>6} {'evals':>6} {'mlab-nc s':>10} {'ratio':>7}   (medians of {a.repeat}, {a.threads} threads)")
    for name in names:
        k, m, d, per, lam = PRESETS[name]
        target = predicted_optimum(a.binary, k, m, d, per, lam) * (1 + a.gap)
        y = problem(k, m, per)
        runs = [solve(k, d, y, lam, target, seed=r, max_iters=a.max_iters) for r in range(a.repeat)]
        t = statistics.median(r[0] for r in runs)
        its = statistics.median(r[1] for r in runs)
        evs = statistics.median(r[2] for r in runs)
        print(f"{name:>6} {t:>10.4f} {its:>6.0f} {evs:>6.0f} {ours[name]:>10.4f} {t / ours[name]:>7.1f}x", flush=True)


def end_to_end(a, names):
    """Seed r of both programs, alternated: the whole `mlab-nc ufm --seed r` process, then
    PyTorch from its seed r, then a pause of `--pause` seconds so that PyTorch's idle OpenMP
    threads are asleep before the next process starts. Medians over seeds 0 .. repeat-1, so
    both medians are over the same number of random starts and the same stretch of time."""
    print(f"{'preset':>6} {'torch s':>10} {'iters':>6} {'evals':>6} {'mlab-nc s':>10} {'iters':>6} {'evals':>6} {'ratio':>7}"
          f"   (medians over seeds 0..{a.repeat - 1}, alternated, {a.threads} threads)")
    for name in names:
        k, m, d, per, lam = PRESETS[name]
        target = predicted_optimum(a.binary, k, m, d, per, lam) * (1 + a.gap)
        y = problem(k, m, per)
        ours, theirs = [], []
        for r in range(a.repeat):
            time.sleep(a.pause)
            t0 = time.perf_counter()
            subprocess.run([a.binary, "--threads", str(a.threads), "ufm", "-K", str(k), "-M", str(m), "-d", str(d), "--per-set",
                            str(per), "--lambda-w", str(lam), "--lambda-h", str(lam), "--lambda-b", str(lam), "--seed", str(r),
                            "--json", "/tmp/mlab-nc-e2e.json"], check=True, capture_output=True)
            elapsed = time.perf_counter() - t0
            with open("/tmp/mlab-nc-e2e.json") as f:
                run = json.load(f)["runs"][0]
            ours.append((elapsed, run["iterations"], run["evaluations"]))
            theirs.append(solve(k, d, y, lam, target, seed=r, max_iters=a.max_iters))
        med = lambda rows, i: statistics.median(r[i] for r in rows)
        t, o = med(theirs, 0), med(ours, 0)
        print(f"{name:>6} {t:>10.4f} {med(theirs, 1):>6.0f} {med(theirs, 2):>6.0f} {o:>10.4f} {med(ours, 1):>6.0f} {med(ours, 2):>6.0f}"
              f" {t / o:>7.1f}x", flush=True)


if __name__ == "__main__":
    main()
