"""Time per epoch of the `mlab-nc train` network in PyTorch, for a side-by-side comparison.

The same network, batch and thread count as `mlab-nc train` at its defaults: an MLP
784-512-512 (Linear -> BatchNorm -> ReLU), a plain linear feature layer of d = 256, a K = 10
classifier with bias; PAL loss (cross-entropy with multi-hot targets), feature decay
(fd/2) mean ||h||^2, SGD with momentum 0.9 and weight decay 5e-3, batch 32, over 1,450
samples (100 per class and 10 per pair). The pixels are random: time does not depend on them.

    python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy
    /tmp/torchenv/bin/python experiments/pytorch_train_epoch.py --threads 2 --batch 32
    mlab-nc --threads 2 train --epochs 30 --eval-every 30 --out /tmp/t.jsonl   # prints its median

Not part of CI.
"""

import argparse
import itertools
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=30)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    k, d = 10, 256
    sets = [[c] for c in range(k)] * 100 + [list(p) for p in itertools.combinations(range(k), 2)] * 10
    y = torch.zeros(len(sets), k)
    for i, s in enumerate(sets):
        y[i, s] = 1.0
    x = torch.rand(len(sets), 784)
    body = nn.Sequential(nn.Linear(784, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, d))
    head = nn.Linear(d, k)
    params = list(body.parameters()) + list(head.parameters())
    opt = torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=5e-3)
    times = []
    for _ in range(a.epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(len(sets))
        for j in range(0, len(sets), a.batch):
            idx = perm[j : j + a.batch]
            if len(idx) < 2:
                continue
            h = body(x[idx])
            z = head(h)
            loss = -(F.log_softmax(z, dim=1) * y[idx]).sum(1).mean() + 0.5 * 1e-2 * h.pow(2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    print(f"pytorch {torch.__version__}: median {statistics.median(times[3:]):.4f} s per epoch (threads {a.threads}, batch {a.batch}, {len(sets)} samples)")


if __name__ == "__main__":
    main()
