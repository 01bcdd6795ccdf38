#!/usr/bin/env python3
"""Export last-layer features, multi-hot labels and the classifier of a PyTorch model to .npy,
for `mlab-nc measure`. A sketch to adapt: it assumes `model.fc` is the final nn.Linear and
that `loader` yields (images, multi_hot_labels).

    python3 experiments/export_features.py            # writes features.npy labels.npy W.npy b.npy
    mlab-nc measure --features features.npy --labels labels.npy --classifier W.npy --bias b.npy
"""
import numpy as np
import torch


@torch.no_grad()
def export(model, loader, prefix=""):
    feats, labels = [], []
    captured = {}
    hook = model.fc.register_forward_hook(lambda mod, inp, out: captured.__setitem__("h", inp[0]))
    model.eval()
    for x, y in loader:
        model(x)
        feats.append(captured["h"].double().cpu())  # N x d, one row per sample
        labels.append(y.to(torch.uint8).cpu())       # N x K multi-hot, 0/1
    hook.remove()
    np.save(prefix + "features.npy", torch.cat(feats).numpy())
    np.save(prefix + "labels.npy", torch.cat(labels).numpy())
    np.save(prefix + "W.npy", model.fc.weight.double().cpu().numpy())  # K x d (nn.Linear layout)
    if model.fc.bias is not None:
        np.save(prefix + "b.npy", model.fc.bias.double().cpu().numpy())


if __name__ == "__main__":
    # A tiny self-contained demo: a random "network" on random multi-label data.
    torch.manual_seed(0)
    K, d, N = 4, 8, 64

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(16, d), torch.nn.ReLU())
            self.fc = torch.nn.Linear(d, K)

        def forward(self, x):
            return self.fc(self.body(x))

    x = torch.randn(N, 16)
    y = (torch.rand(N, K) < 0.3).to(torch.uint8)
    y[y.sum(1) == 0, 0] = 1  # every sample needs at least one label
    export(Net(), [(x, y)])
    print("wrote features.npy labels.npy W.npy b.npy")
