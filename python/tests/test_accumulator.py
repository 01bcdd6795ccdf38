"""Accumulator: one pass over batches gives what measure() gives on everything."""

import numpy as np
import pytest

import mlab_nc
from conftest import SETS_K4_M2, assert_close, multilabel

# Quantities that are exactly zero for the data (tag-wise angles when the means lie in the
# span of the tags' means) come out of float64 at rounding level rather than as 0.
ZERO_FLOOR = 1e-12


def stream(x, y, batches, **kw):
    acc = mlab_nc.Accumulator(y.shape[1], x.shape[1])
    for xb, yb in zip(np.array_split(x, batches), np.array_split(y, batches)):
        acc.update(xb, yb)
    assert acc.samples == len(x) and acc.batches == batches
    return acc.result(**kw)


@pytest.mark.parametrize("batches", [1, 7, 100])
def test_batches_equal_measure_on_everything(batches):
    x, y = multilabel(2000, d=16, seed=5)
    rng = np.random.default_rng(6)
    w, b = rng.normal(size=(4, 16)), rng.normal(size=4)
    want = mlab_nc.measure(x, y, classifier=w, bias=b)
    assert_close(stream(x, y, batches, classifier=w, bias=b), want, 1e-10, ZERO_FLOOR)


@pytest.mark.parametrize("batches", [1, 7, 100])
def test_a_large_common_offset_costs_no_digits(batches):
    # Features 1e4 + O(1): the synthesis weights' conditioning grows like the offset squared
    # times the least-squares residual, so the data's multi-label means lie exactly in the span
    # of the single-label ones (residual 0); then every number must agree to 1e-10.
    x, y = multilabel(2000, d=16, offset=1e4, spread=0.5, seed=7, exact_tags=True)
    want = mlab_nc.measure(x, y)
    got = stream(x, y, batches)
    assert_close(got, want, 1e-10, ZERO_FLOOR)
    assert want["metrics"]["nc1"] > 1e-3, "the test needs a real within-set spread"


def test_the_textbook_second_moment_would_fail_there():
    # The check above has teeth: E[x x^T] - E[x] E[x]^T, the textbook within-set scatter,
    # loses about 8 of 16 digits at an offset of 1e4 with a spread of 0.5 (and all of them
    # at 1e8), while the streamed scatter matches to 1e-10 (the NC1 above).
    x, y = multilabel(2000, d=16, offset=1e4, spread=0.5, seed=7, exact_tags=True)
    keys = [tuple(np.flatnonzero(r)) for r in y]
    centred = np.zeros((16, 16))
    naive = x.T @ x
    for s in set(keys):
        rows = x[[k == s for k in keys]]
        mu = rows.mean(axis=0)
        centred += (rows - mu).T @ (rows - mu)
        naive -= len(rows) * np.outer(mu, mu)
    err = np.abs(naive - centred).max() / np.abs(centred).max()
    assert err > 1e-10, err


def test_float32_fortran_and_strided_batches():
    x, y = multilabel(600, d=8, seed=8)
    x32 = x.astype(np.float32)
    want = mlab_nc.measure(x32, y)
    acc = mlab_nc.Accumulator(4, 8)
    before = mlab_nc._native._copies()
    for i, (xb, yb) in enumerate(zip(np.array_split(x32, 6), np.array_split(y, 6))):
        acc.update(np.asfortranarray(xb) if i % 2 else xb, yb)
    assert mlab_nc._native._copies() == before, "contiguous batches were copied"
    wide = np.zeros((0, 16), dtype=np.float32)
    acc.update(wide[:, ::2], np.zeros((0, 4)))  # an empty, strided batch is fine
    assert_close(acc.result(), want, 1e-10, ZERO_FLOOR)


def test_a_bad_batch_leaves_the_accumulator_unchanged():
    x, y = multilabel(100, d=4, seed=9)
    acc = mlab_nc.Accumulator(4, 4)
    acc.update(x, y)
    before = acc.result()
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        acc.update(bad, y)
    with pytest.raises(ValueError, match="dim = 4"):
        acc.update(x[:, :3], y)
    with pytest.raises(ValueError, match="classes = 4"):
        acc.update(x, y[:, :3])
    with pytest.raises(ValueError, match="multiply them by a constant"):
        acc.update(x * 1e-200, y)  # its squared deviations would underflow to 0
    assert acc.result() == before and acc.samples == 100


def test_unseen_sets_and_classes_are_reported_like_measure():
    # Only some sets present, and class 3 without a single-label sample.
    sets = [(0,), (1,), (2,), (0, 3), (1, 2)]
    x, y = multilabel(50, sets=sets, d=5, seed=10)
    assert_close(stream(x, y, 5), mlab_nc.measure(x, y), 1e-10, ZERO_FLOOR)
    assert "no multiplicity-1 mean for class 3" in mlab_nc.measure(x, y)["metrics"]["note"]
    assert len(SETS_K4_M2) == 10
