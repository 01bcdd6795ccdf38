"""predict() and ufm(): the CLI's JSON, and the GIL released while they work."""

import json
import threading
import time

import mlab_nc
import pytest
from conftest import assert_close


def test_predict_equals_the_cli(tmp_path, cli):
    cli("predict", "-K", 5, "-M", 2, "--per-set", "3,1", "--lambda-w", "1e-2", "--lambda-h", "2e-2", "--loss", "pal-mean", "--json", tmp_path / "p.json")
    want = json.loads((tmp_path / "p.json").read_text())
    got = mlab_nc.predict(5, 2, [3, 1], 1e-2, 2e-2, loss="pal-mean")
    assert got == want
    # The default arguments are the CLI's defaults.
    cli("predict", "-K", 4, "-M", 2, "--json", tmp_path / "d.json")
    assert mlab_nc.predict(4, 2) == json.loads((tmp_path / "d.json").read_text())


def test_ufm_equals_the_cli(tmp_path, cli):
    cli("ufm", "-K", 4, "-M", 2, "-d", 6, "--per-set", "2,1", "--lambda-w", "1e-2", "--seeds", 2, "--json", tmp_path / "u.json")
    want = json.loads((tmp_path / "u.json").read_text())
    got = mlab_nc.ufm(4, 2, dim=6, per_set=[2, 1], lambda_w=1e-2, seeds=2)
    assert_close(got, want, 0.0, skip=("seconds",))
    assert got["verdict"] == "verified"


def test_ufm_releases_the_gil():
    ticks = []
    done = threading.Event()

    # About 0.5 s on two cores (590 iterations), ten times what the assertion needs; preset C
    # (about 50 ms) sat at its edge.
    def solve():
        mlab_nc.ufm(30, 3, dim=40, lambda_w=1e-5, lambda_h=1e-5, lambda_b=1e-5, tol_stop=0.0)
        done.set()

    t = threading.Thread(target=solve)
    start = time.perf_counter()
    t.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.002)
    t.join()
    elapsed = time.perf_counter() - start
    # With the GIL held for the whole solve, this thread could not tick until it ended.
    assert elapsed > 0.1 and len(ticks) >= 20, (elapsed, len(ticks))


def test_a_skew_that_rounds_away_warns():
    # One sample per set: every count is max(1, round(w)) = 1, so the skew changes nothing.
    with pytest.warns(UserWarning, match="the problem is the balanced one"):
        r = mlab_nc.predict(4, 2, class_skew=1e300)
    assert r["samples"] == 10


def test_ctrl_c_interrupts_a_long_solve():
    """Ctrl-C stops a long `ufm` within an iteration and raises KeyboardInterrupt (it used to
    wait for the whole call: 100 starts of D take about a minute here); the next call runs as
    usual."""
    import _thread

    timer = threading.Timer(0.5, _thread.interrupt_main)
    timer.start()
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        mlab_nc.ufm(50, 3, dim=64, lambda_w=2e-4, lambda_h=2e-4, lambda_b=2e-4, seeds=100)
    assert time.perf_counter() - t0 < 20.0
    timer.join()
    assert mlab_nc.ufm(4, 2, seeds=2)["verdict"] == "verified"
