"""Bad input raises ValueError or TypeError with a one-line message, never a PanicException."""

import numpy as np
import pytest

import mlab_nc
from conftest import multilabel

X, Y = multilabel(40, d=4, seed=11)


def nan_at(a, i, j, v=np.nan):
    b = a.copy()
    b[i, j] = v
    return b


CASES = [
    ("shape mismatch", lambda: mlab_nc.measure(X, Y[:30]), ValueError, "30 rows"),
    ("NaN feature", lambda: mlab_nc.measure(nan_at(X, 2, 1), Y), ValueError, "NaN or infinite"),
    ("infinite feature", lambda: mlab_nc.measure(nan_at(X, 2, 1, np.inf), Y), ValueError, "NaN or infinite"),
    ("label 2", lambda: mlab_nc.measure(X, nan_at(Y, 0, 0, 2.0)), ValueError, "must be 0 or 1"),
    ("NaN label", lambda: mlab_nc.measure(X, nan_at(Y, 0, 0)), ValueError, "must be 0 or 1"),
    ("sample with no label", lambda: mlab_nc.measure(X, np.vstack([np.zeros((1, 4)), Y[1:]])), ValueError, "has no label"),
    ("K < 2", lambda: mlab_nc.measure(X, np.ones((40, 1))), ValueError, "at least 2"),
    ("classifier of the wrong d", lambda: mlab_nc.measure(X, Y, classifier=np.ones((4, 3))), ValueError, "expected K x d = 4 x 4"),
    ("bias of the wrong K", lambda: mlab_nc.measure(X, Y, bias=np.ones(3)), ValueError, "expected K = 4"),
    ("NaN classifier", lambda: mlab_nc.measure(X, Y, classifier=nan_at(np.ones((4, 4)), 1, 1)), ValueError, "NaN or infinite"),
    ("1-D features", lambda: mlab_nc.measure(X[:, 0], Y), ValueError, "2-D"),
    ("integer features", lambda: mlab_nc.measure(X.astype(np.int64), Y), TypeError, "float32 or float64"),
    ("string labels", lambda: mlab_nc.measure(X, Y.astype(str)), TypeError, "not supported"),
    ("not an array", lambda: mlab_nc.measure(object(), Y), TypeError, "float32 or float64"),
    ("empty features", lambda: mlab_nc.measure(np.zeros((0, 4)), np.zeros((0, 4))), ValueError, "empty"),
    ("accumulator K < 2", lambda: mlab_nc.Accumulator(1, 4), ValueError, "at least 2"),
    ("accumulator d = 0", lambda: mlab_nc.Accumulator(4, 0), ValueError, "at least 1"),
    ("accumulator of a different d", lambda: mlab_nc.Accumulator(4, 5).update(X, Y), ValueError, "dim = 5"),
    ("accumulator of a different K", lambda: mlab_nc.Accumulator(5, 4).update(X, Y), ValueError, "classes = 5"),
    ("accumulator result before data", lambda: mlab_nc.Accumulator(4, 4).result(), ValueError, "no samples"),
    ("predict K < 2", lambda: mlab_nc.predict(1, 1), ValueError, "at least 2"),
    ("predict M > K", lambda: mlab_nc.predict(3, 4), ValueError, "max-labels"),
    ("predict negative lambda", lambda: mlab_nc.predict(4, 2, 1, -1.0, 1.0), ValueError, "lambda-w"),
    ("predict NaN lambda", lambda: mlab_nc.predict(4, 2, 1, 1e-2, float("nan")), ValueError, "lambda-h"),
    ("predict per_set of 3 for M = 2", lambda: mlab_nc.predict(4, 2, [1, 2, 3]), ValueError, "per-set"),
    ("predict unknown loss", lambda: mlab_nc.predict(4, 2, loss="mse"), ValueError, "unknown loss"),
    ("ufm negative seeds", lambda: mlab_nc.ufm(4, 2, seeds=0), ValueError, "seeds"),
    ("ufm 10^12 seeds", lambda: mlab_nc.ufm(4, 2, seeds=10**12), ValueError, "alone would need"),
    ("ufm unknown solver", lambda: mlab_nc.ufm(4, 2, solver="sgd"), ValueError, "unknown solver"),
    ("ufm bad tolerance", lambda: mlab_nc.ufm(4, 2, tol_grad=0.0), ValueError, "tol-grad"),
    ("ufm unknown option", lambda: mlab_nc.ufm(4, 2, lambda_x=1.0), TypeError, "lambda_x"),
    ("ufm lambda_w = 0", lambda: mlab_nc.ufm(4, 2, lambda_w=0.0), ValueError, "no minimiser"),
]


@pytest.mark.parametrize("name,call,kind,text", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_the_right_exception(name, call, kind, text):
    with pytest.raises(kind, match=text) as e:
        call()
    assert type(e.value) is kind
    assert "\n" not in str(e.value), "one line"


def test_no_panic_exception_escapes():
    # PanicException derives from BaseException: catch everything and name it.
    for name, call, _, _ in CASES:
        try:
            call()
        except BaseException as e:  # noqa: BLE001
            assert type(e).__name__ != "PanicException", name
            assert isinstance(e, (ValueError, TypeError)), f"{name}: {type(e).__name__}: {e}"
        else:
            pytest.fail(f"{name}: no exception")
