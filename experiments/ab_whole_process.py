"""Times the whole `mlab-nc ufm` process of two builds on the presets A to E, alternated.

    python3 experiments/ab_whole_process.py OLD_BINARY NEW_BINARY [--rounds 3]

Each round runs every preset once with each build (default flags, `--json`, 2 threads), so
both builds see the same machine state; prints medians, iterations / evaluations and verdicts.
"""
import argparse
import json
import statistics
import subprocess
import tempfile
import time

PRESETS = {"A": (4, 2, 8, 5, 5e-3), "B": (10, 3, 16, 2, 2e-3), "C": (20, 3, 32, 2, 1e-3),
           "D": (50, 3, 64, 1, 2e-4), "E": (100, 2, 128, 2, 2e-4)}


def run(binary, preset, out):
    k, m, d, per, lam = PRESETS[preset]
    t0 = time.perf_counter()
    subprocess.run([binary, "--threads", "2", "ufm", "-K", str(k), "-M", str(m), "-d", str(d), "--per-set", str(per),
                    "--lambda-w", str(lam), "--lambda-h", str(lam), "--lambda-b", str(lam), "--json", out],
                   check=True, capture_output=True)
    seconds = time.perf_counter() - t0
    r = json.load(open(out))["runs"][0]
    return seconds, r["iterations"], r["evaluations"], r["verdict"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    for preset in PRESETS:
        runs = {"old": [], "new": []}
        for _ in range(a.rounds):
            for which in ("old", "new"):
                runs[which].append(run(getattr(a, which), preset, out))
        mo = statistics.median(r[0] for r in runs["old"])
        mn = statistics.median(r[0] for r in runs["new"])
        o, n = runs["old"][0], runs["new"][0]
        print(f"{preset}: old {mo:.4f} s ({o[1]}/{o[2]} {o[3]})  new {mn:.4f} s ({n[1]}/{n[2]} {n[3]})  change {100 * (mn / mo - 1):+.0f}%")


if __name__ == "__main__":
    main()
