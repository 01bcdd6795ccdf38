"""measure(): the CLI's numbers, from any layout numpy (or the array protocol) gives."""

import json

import numpy as np
import pytest

import mlab_nc
from conftest import assert_close, multilabel


def test_measure_equals_the_cli_on_the_same_npy_files(tmp_path, cli):
    x, y = multilabel(300, d=8, seed=1)
    rng = np.random.default_rng(2)
    w, b = rng.normal(size=(4, 8)), rng.normal(size=4)
    for name, a in [("f", x), ("y", y), ("w", w), ("b", b)]:
        np.save(tmp_path / f"{name}.npy", a)
    cli("measure", "--features", tmp_path / "f.npy", "--labels", tmp_path / "y.npy", "--classifier", tmp_path / "w.npy", "--bias", tmp_path / "b.npy", "--json", tmp_path / "r.json")
    want = json.loads((tmp_path / "r.json").read_text())
    got = mlab_nc.measure(x, y, classifier=w, bias=b)
    assert_close(got, want, 1e-12)
    # The report is a real measurement: a random classifier is far from the ETF.
    assert got["metrics"]["nc2_w"] > 0.05 and got["samples"] == 300


def test_layouts_and_dtypes_give_the_same_numbers():
    x, y = multilabel(200, d=6, seed=3)
    want = mlab_nc.measure(x, y)
    before = mlab_nc._native._copies()
    assert_close(mlab_nc.measure(x, y), want, 0.0)
    # Fortran order: read a row at a time where it lies, the same numbers bit for bit.
    assert_close(mlab_nc.measure(np.asfortranarray(x), y), want, 0.0)
    assert mlab_nc._native._copies() == before, "float64 C- or Fortran-order features were copied"
    # float32, either order: measured exactly as the float64 array with the same (rounded)
    # values, and never copied (neither whole as float64 nor otherwise).
    x32 = x.astype(np.float32)
    want32 = mlab_nc.measure(x32.astype(np.float64), y)
    before = mlab_nc._native._copies()
    assert_close(mlab_nc.measure(x32, y), want32, 0.0)
    assert_close(mlab_nc.measure(np.asfortranarray(x32), y), want32, 0.0)
    assert mlab_nc._native._copies() == before, "C- or Fortran-order features were copied"
    # A non-contiguous slice of a larger array (copied), and bool labels.
    wide = np.zeros((200, 12))
    wide[:, ::2] = x
    assert not wide[:, ::2].flags.c_contiguous
    assert_close(mlab_nc.measure(wide[:, ::2], y.astype(bool)), want, 0.0)
    assert mlab_nc._native._copies() > before


def test_labels_in_any_real_dtype_and_order_give_the_same_numbers():
    x, y = multilabel(120, d=5, seed=4)
    want = mlab_nc.measure(x, y)
    for dtype in [np.uint8, np.int8, np.int16, np.int64, np.uint32, np.float16, np.float32, bool]:
        yt = y.astype(dtype)
        assert_close(mlab_nc.measure(x, yt), want, 0.0)
        assert_close(mlab_nc.measure(x, np.asfortranarray(yt)), want, 0.0)
    # A value other than 0 or 1 is named as it is, in float64 too (1 + 2^-30 reads as 1 in
    # float32).
    for dtype, bad, shown in [(np.int16, 2, "is 2;"), (np.uint8, 255, "is 255;"), (np.float64, 1 + 2.0**-30, "is 1.0000000009313226;")]:
        yb = y.astype(dtype)
        yb[1, 1] = bad
        with pytest.raises(ValueError, match=shown):
            mlab_nc.measure(x, yb)


class ArrayProtocol:
    """An object that numpy reads through the array protocol, as it reads CPU torch tensors."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a if dtype is None else self.a.astype(dtype)


def test_array_protocol_objects_are_read():
    x, y = multilabel(100, d=4, seed=4)
    assert_close(mlab_nc.measure(ArrayProtocol(x), ArrayProtocol(y)), mlab_nc.measure(x, y), 0.0)


def test_collapsed_features_measure_as_collapsed():
    # Features exactly on a simplex ETF (K = 3, d = 2) and its tag-wise sums: NC1 = 0, NC2-H = 0,
    # tag-wise angle 0 and scale 2 (the mean of a pair is twice the average of its tags).
    s = np.sqrt(3) / 2
    e = np.array([[1.0, 0.0], [-0.5, s], [-0.5, -s]])
    pairs = [(0, 1), (0, 2), (1, 2)]
    x = np.vstack([e, [e[a] + e[b] for a, b in pairs]])
    y = np.zeros((6, 3))
    for i in range(3):
        y[i, i] = 1
    for i, (a, b) in enumerate(pairs):
        y[3 + i, [a, b]] = 1
    r = mlab_nc.measure(x, y)
    assert r["metrics"]["nc1"] < 1e-20 and r["metrics"]["nc2_h"] < 1e-12
    tag = r["metrics"]["tag"][0]
    assert tag["max_angle_deg"] < 1e-6 and abs(tag["scale_mean"] - 2.0) < 1e-12
