#!/usr/bin/env python3
"""Measure multi-label neural collapse inside a PyTorch training loop with mlab_nc.Accumulator:
every few epochs, one pass over the training loader feeds the penultimate features and the
labels to the accumulator batch by batch (nothing is held in memory), and the metrics are
logged as one JSON line per evaluation. Not run in CI.

    pip install ./python torch            # mlab_nc and PyTorch (CPU is enough)
    python3 experiments/train_with_accumulator.py --epochs 60 --eval-every 10

The data are synthetic on purpose (the example must run anywhere in a minute): K classes, M = 2,
each sample a noisy mix of its labels' random prototypes in 32 dimensions, balanced within each
multiplicity. `mlab-nc train` does the same on real Fashion-MNIST images.
"""

import argparse
import itertools
import json
import time

import numpy as np
import torch

import mlab_nc


def dataset(classes, per_single, per_pair, dim, seed):
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(classes, dim, generator=g) * 2.0
    sets = [(c,) for c in range(classes)] * per_single + list(itertools.combinations(range(classes), 2)) * per_pair
    x = torch.stack([protos[list(s)].max(dim=0).values + 0.5 * torch.randn(dim, generator=g) for s in sets])
    y = torch.zeros(len(sets), classes)
    for i, s in enumerate(sets):
        y[i, list(s)] = 1.0
    return x, y


class Net(torch.nn.Module):
    """An MLP whose last hidden layer is linear (no ReLU), as in the paper's setting."""

    def __init__(self, dim_in, width, feat, classes):
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Linear(dim_in, width), torch.nn.BatchNorm1d(width), torch.nn.ReLU(),
            torch.nn.Linear(width, width), torch.nn.BatchNorm1d(width), torch.nn.ReLU(),
            torch.nn.Linear(width, feat),
        )
        self.fc = torch.nn.Linear(feat, classes)

    def forward(self, x):
        h = self.body(x)
        return self.fc(h), h


def pal_loss(logits, y):
    # Pick-all-label cross-entropy: the sum over a sample's labels of -log softmax, averaged over samples.
    return -(torch.log_softmax(logits, dim=1) * y).sum(dim=1).mean()


@torch.no_grad()
def measure(model, loader, classes, feat):
    model.eval()
    acc = mlab_nc.Accumulator(classes, feat)
    for xb, yb in loader:
        _, h = model(xb)
        acc.update(h, yb)  # CPU tensors go in through the array protocol, float32, no copy
    model.train()
    return acc.result(classifier=model.fc.weight.detach(), bias=model.fc.bias.detach())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--classes", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    k, feat = a.classes, 16
    x, y = dataset(k, per_single=40, per_pair=8, dim=32, seed=a.seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32, shuffle=True)
    model = Net(32, 128, feat, k)
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-4)
    out = open(a.out, "w") if a.out else None
    for epoch in range(a.epochs + 1):
        if epoch % a.eval_every == 0 or epoch == a.epochs:
            t = time.perf_counter()
            r = measure(model, loader, k, feat)
            m = r["metrics"]
            line = {"epoch": epoch, "nc1": m["nc1"], "nc2_w": m["nc2_w"], "nc2_h": m["nc2_h"], "nc3": m["nc3"],
                    "tag_angle_deg": m["tag"][0]["mean_angle_deg"], "tag_scale": m["tag"][0]["scale_mean"],
                    "measure_seconds": round(time.perf_counter() - t, 4)}
            print(json.dumps(line))
            if out:
                out.write(json.dumps({"epoch": epoch, "report": r}) + "\n")
        if epoch == a.epochs:
            break
        for xb, yb in loader:
            logits, h = model(xb)
            loss = pal_loss(logits, yb) + 5e-3 * h.pow(2).sum(dim=1).mean() / 2  # feature decay
            opt.zero_grad()
            loss.backward()
            opt.step()
    # Streaming equals measuring everything at once:
    with torch.no_grad():
        model.eval()
        _, h = model(x)
        whole = mlab_nc.measure(h.numpy(), y.numpy(), classifier=model.fc.weight.detach().numpy(), bias=model.fc.bias.detach().numpy())
    print("streamed NC1", r["metrics"]["nc1"], "= measured at once", whole["metrics"]["nc1"])


if __name__ == "__main__":
    main()
