"""Shared helpers: the CLI binary the results are compared with, test data, and a recursive
comparison of report dicts."""

import math
import os
import pathlib
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cli():
    """Runs the mlab-nc CLI (MLAB_NC_BIN, or the workspace's release build) and returns its
    completed process. A missing binary is a failure, never a skip."""
    binary = pathlib.Path(os.environ.get("MLAB_NC_BIN", ROOT / "target" / "release" / "mlab-nc"))
    assert binary.exists(), f"{binary} not found: build it with `cargo build --release` (or set MLAB_NC_BIN)"

    def run(*args):
        p = subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return p

    return run


SETS_K4_M2 = [(0,), (1,), (2,), (3,), (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]


def multilabel(n, sets=SETS_K4_M2, classes=4, d=8, offset=0.0, spread=0.3, seed=0, exact_tags=False):
    """n samples cycling through `sets`: features offset + template(S) + noise, labels
    multi-hot. The template of a set is the average of its tags' random templates. With
    `exact_tags`, consecutive samples of a set carry opposite noise, so each set's mean is
    exactly offset + template(S), in the span of the single-label means."""
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(classes, d)) * 3.0
    x = np.empty((n, d))
    y = np.zeros((n, classes))
    for i in range(n):
        s = sets[(i // 2) % len(sets)] if exact_tags else sets[i % len(sets)]
        if not exact_tags or i % 2 == 0:
            noise = rng.normal(size=d) * spread
        else:
            noise = -noise
        x[i] = offset + templates[list(s)].mean(axis=0) + noise
        y[i, list(s)] = 1.0
    return x, y


def assert_close(got, want, rel, floor=0.0, path="", skip=()):
    """Every number in `got` within rel * magnitude + floor of `want`; every other value equal;
    the same keys. Keys named in `skip` are not compared (wall times)."""
    if isinstance(want, dict):
        assert isinstance(got, dict), path
        assert sorted(got) == sorted(want), f"{path}: keys {sorted(got)} vs {sorted(want)}"
        for k in want:
            if k not in skip:
                assert_close(got[k], want[k], rel, floor, f"{path}.{k}", skip)
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want)):
            assert_close(g, w, rel, floor, f"{path}[{i}]", skip)
    elif isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, (int, float)) and isinstance(want, (int, float)), f"{path}: {got!r} vs {want!r}"
        assert math.isfinite(got) == math.isfinite(want), f"{path}: {got} vs {want}"
        assert abs(got - want) <= rel * max(abs(got), abs(want)) + floor, f"{path}: {got!r} vs {want!r}"
    else:
        assert got == want, f"{path}: {got!r} vs {want!r}"
