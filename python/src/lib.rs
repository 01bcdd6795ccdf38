//! The Python binding of mlab-nc (`mlab_nc._native`). It only translates: numpy arrays (and
//! anything `numpy.asarray` reads, such as CPU torch tensors) in, borrowed without a copy
//! where the layout allows; plain dicts out, with the CLI's JSON keys; library errors out as
//! `ValueError`, wrong types as `TypeError`. Every computation is a library function, and runs
//! with the GIL released. A Rust panic becomes a `RuntimeError`, never a `PanicException`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};

use mlab_nc::analysis::accumulate::Accumulator as Stream;
use mlab_nc::analysis::arrays::{Array2, Order, Values};
use mlab_nc::analysis::measure::{measure_inputs, Inputs, Names};
use mlab_nc::analysis::report::PredictionReport;
use mlab_nc::analysis::verdict::Tolerances;
use mlab_nc::commands::verify::VerifyOptions;
use mlab_nc::model::config::{skew_note, skewed_counts, UfmConfig};
use mlab_nc::model::loss::Loss;
use mlab_nc::solver::{Method, SolveParams};
use numpy::{PyArray1, PyArray2, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;

/// Input arrays the binding had to copy (non-contiguous layouts, or a conversion to float64
/// in C order for `measure`); read by the tests to show that float64 C-order input is used in
/// place.
static COPIES: AtomicU64 = AtomicU64::new(0);

fn value_error(e: mlab_nc::error::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// Runs `f`, turning a panic into a `RuntimeError` (pyo3 would raise `PanicException`, which
/// derives from `BaseException` and escapes `except Exception`).
fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let what = payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned()).unwrap_or_default();
            Err(PyRuntimeError::new_err(format!("mlab_nc internal error (please report it): {what}")))
        }
    }
}

/// Runs `f` (solves) from a thread of its own, which hands it to a worker of the thread pool
/// (`mlab_nc::on_pool`), while this thread, without the GIL, wakes every 50 ms to let Python
/// see Ctrl-C: on one the running solves are asked to stop (each ends within an iteration,
/// with an error, nothing judged from it) and the KeyboardInterrupt is raised once they have.
/// Without it a long `ufm` could not be interrupted until it returned.
fn interruptible<T: Send>(py: Python<'_>, f: impl FnOnce() -> mlab_nc::error::Result<T> + Send) -> PyResult<T> {
    let finished = (std::sync::Mutex::new(false), std::sync::Condvar::new());
    std::thread::scope(|s| {
        let work = s.spawn(|| {
            // Said done even if `f` panics (the panic comes back through `join`).
            struct Done<'a>(&'a (std::sync::Mutex<bool>, std::sync::Condvar));
            impl Drop for Done<'_> {
                fn drop(&mut self) {
                    if let Ok(mut d) = self.0 .0.lock() {
                        *d = true;
                    }
                    self.0 .1.notify_all();
                }
            }
            let _done = Done(&finished);
            mlab_nc::on_pool(f)
        });
        let wait = || {
            let (lock, cv) = &finished;
            let Ok(d) = lock.lock() else { return true };
            cv.wait_timeout_while(d, std::time::Duration::from_millis(50), |d| !*d).map_or(true, |(d, _)| *d)
        };
        let mut signal = Ok(());
        while !py.detach(wait) {
            if signal.is_ok() {
                signal = py.check_signals();
                if signal.is_err() {
                    mlab_nc::solver::request_interrupt();
                }
            }
        }
        let out = work.join();
        if signal.is_err() {
            mlab_nc::solver::clear_interrupt();
        }
        signal?;
        out.unwrap_or_else(|payload| std::panic::resume_unwind(payload)).map_err(value_error)
    })
}

/// A report as a plain dict, through its JSON (the CLI's keys and numbers, exactly).
fn to_dict<T: serde::Serialize>(py: Python<'_>, value: &T) -> PyResult<Py<PyAny>> {
    let text = serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(format!("cannot encode the report: {e}")))?;
    Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
}

/// A 2-D array as held for one call: borrowed from numpy when contiguous, else copied.
enum Held<'py> {
    F64(PyReadonlyArray2<'py, f64>, Order),
    F32(PyReadonlyArray2<'py, f32>, Order),
    OwnedF64(Vec<f64>, [usize; 2]),
    OwnedF32(Vec<f32>, [usize; 2]),
}

impl Held<'_> {
    fn view(&self) -> Array2<'_> {
        let made = match self {
            Held::F64(a, order) => Array2::new(Values::F64(memory(a)), a.shape()[0], a.shape()[1], *order),
            Held::F32(a, order) => Array2::new(Values::F32(memory(a)), a.shape()[0], a.shape()[1], *order),
            Held::OwnedF64(v, [r, c]) => Array2::new(Values::F64(v), *r, *c, Order::RowMajor),
            Held::OwnedF32(v, [r, c]) => Array2::new(Values::F32(v), *r, *c, Order::RowMajor),
        };
        made.expect("the array's element count is its shape's product")
    }
}

/// The elements of a contiguous array in memory order.
fn memory<'a, T: numpy::Element>(a: &'a PyReadonlyArray2<'_, T>) -> &'a [T] {
    a.as_slice().ok().or_else(|| a.as_array().reversed_axes().to_slice()).expect("only contiguous arrays are held borrowed")
}

fn layout(a: &Bound<'_, PyUntypedArray>) -> Option<Order> {
    if a.is_c_contiguous() {
        Some(Order::RowMajor)
    } else if a.is_fortran_contiguous() {
        Some(Order::ColMajor)
    } else {
        None
    }
}

/// Reads `obj` as a 2-D float32 or float64 array (`any_real`: any real dtype, as labels may
/// be bool or int, converted to float32 when it holds them exactly (at most 2 bytes: bool,
/// 8- and 16-bit integers, float16), else to float64).
fn array2<'py>(py: Python<'py>, obj: &Bound<'py, PyAny>, name: &str, any_real: bool) -> PyResult<Held<'py>> {
    let np = py.import("numpy")?;
    let arr = np.call_method1("asarray", (obj,)).map_err(|e| PyTypeError::new_err(format!("{name}: cannot be read as an array ({e})")))?;
    let untyped = arr.cast::<PyUntypedArray>().map_err(|_| PyTypeError::new_err(format!("{name}: cannot be read as an array")))?;
    let dtype = untyped.dtype();
    let native = dtype.is_equiv_to(&numpy::dtype::<f64>(py)) || dtype.is_equiv_to(&numpy::dtype::<f32>(py));
    let convertible = any_real && matches!(dtype.kind(), b'b' | b'i' | b'u' | b'f');
    if !(native || convertible) {
        return Err(PyTypeError::new_err(format!(
            "{name}: dtype {dtype} is not supported (float32 or float64{})",
            if any_real { ", bool or integer" } else { "" }
        )));
    }
    if untyped.ndim() != 2 {
        return Err(PyValueError::new_err(format!("{name}: expected a 2-D array, got shape {:?}", untyped.shape())));
    }
    let arr = if native {
        arr
    } else {
        COPIES.fetch_add(1, Ordering::Relaxed);
        np.call_method1("asarray", (&arr, if dtype.itemsize() <= 2 { "float32" } else { "float64" }))?
    };
    let order = layout(arr.cast::<PyUntypedArray>()?);
    if let Ok(a) = arr.cast::<PyArray2<f64>>() {
        let ro = a.try_readonly()?;
        Ok(match order {
            Some(o) => Held::F64(ro, o),
            None => {
                COPIES.fetch_add(1, Ordering::Relaxed);
                let shape = [ro.shape()[0], ro.shape()[1]];
                Held::OwnedF64(ro.as_array().iter().copied().collect(), shape)
            }
        })
    } else {
        let ro = arr.cast::<PyArray2<f32>>()?.try_readonly()?;
        Ok(match order {
            Some(o) => Held::F32(ro, o),
            None => {
                COPIES.fetch_add(1, Ordering::Relaxed);
                let shape = [ro.shape()[0], ro.shape()[1]];
                Held::OwnedF32(ro.as_array().iter().copied().collect(), shape)
            }
        })
    }
}

/// Reads `obj` as a 1-D float64 vector.
fn vector(py: Python<'_>, obj: &Bound<'_, PyAny>, name: &str) -> PyResult<Vec<f64>> {
    let np = py.import("numpy")?;
    let arr = np.call_method1("asarray", (obj, "float64")).map_err(|e| PyTypeError::new_err(format!("{name}: cannot be read as a float64 array ({e})")))?;
    let a = arr.cast::<PyArray1<f64>>().map_err(|_| {
        let shape = arr.cast::<PyUntypedArray>().map(|u| format!("{:?}", u.shape())).unwrap_or_default();
        PyValueError::new_err(format!("{name}: expected a 1-D array, got shape {shape}"))
    })?;
    let ro: PyReadonlyArray1<f64> = a.try_readonly()?;
    Ok(ro.as_array().to_vec())
}

/// Neural-collapse metrics of one set of features, as `mlab-nc measure --json` computes them.
///
/// features: N x d, float32 or float64, any memory order (CPU torch tensors work).
/// labels: N x K multi-hot (0/1; bool, integer or float).
/// classifier: optional K x d (`nn.Linear.weight`); bias: optional length K.
/// Returns a dict with the keys of `measure --json`. Raises ValueError or TypeError on bad input.
#[pyfunction]
#[pyo3(signature = (features, labels, classifier=None, bias=None))]
fn measure(
    py: Python<'_>,
    features: &Bound<'_, PyAny>,
    labels: &Bound<'_, PyAny>,
    classifier: Option<&Bound<'_, PyAny>>,
    bias: Option<&Bound<'_, PyAny>>,
) -> PyResult<Py<PyAny>> {
    guard(|| {
        let f = array2(py, features, "features", false)?;
        let y = array2(py, labels, "labels", true)?;
        let w = classifier.map(|c| array2(py, c, "classifier", false)).transpose()?;
        let b = bias.map(|b| vector(py, b, "bias")).transpose()?;
        let inp = Inputs { features: f.view(), labels: y.view(), classifier: w.as_ref().map(Held::view), bias: b.as_deref() };
        let report = py.detach(|| measure_inputs(&inp, &Names::ARGUMENTS)).map_err(value_error)?;
        to_dict(py, &report)
    })
}

/// Streaming measurement: feed batches of (features, labels) with `update`, then read the
/// metrics of everything fed so far with `result`, which equal `measure` on the concatenated
/// arrays. Keeps, in float64, the count and mean of every label set and the d x d within-set
/// scatter, merged batch by batch (Chan et al.), so no digits are lost to a common offset.
#[pyclass(module = "mlab_nc")]
struct Accumulator {
    inner: Stream,
}

#[pymethods]
impl Accumulator {
    /// Accumulator(classes, dim): K classes (>= 2), feature dimension d (>= 1).
    #[new]
    fn new(classes: i64, dim: i64) -> PyResult<Self> {
        guard(|| {
            let k = usize::try_from(classes).map_err(|_| PyValueError::new_err(format!("classes: K = {classes}; at least 2 are needed")))?;
            let d = usize::try_from(dim).map_err(|_| PyValueError::new_err(format!("dim: d = {dim}; the feature dimension must be at least 1")))?;
            Ok(Accumulator { inner: Stream::new(k, d).map_err(value_error)? })
        })
    }

    /// Adds one batch: features n x d (float32 or float64, any memory order), labels n x K
    /// multi-hot. A batch that fails a check raises and leaves the accumulator unchanged.
    fn update(&mut self, py: Python<'_>, features: &Bound<'_, PyAny>, labels: &Bound<'_, PyAny>) -> PyResult<()> {
        guard(|| {
            let f = array2(py, features, "features", false)?;
            let y = array2(py, labels, "labels", true)?;
            let (fv, yv) = (f.view(), y.view());
            let inner = &mut self.inner;
            py.detach(|| inner.update(&fv, &yv, &Names::ARGUMENTS)).map_err(value_error)
        })
    }

    /// The metrics of every batch so far, with an optional classifier (K x d) and bias (K):
    /// a dict with the keys of `measure --json`.
    #[pyo3(signature = (classifier=None, bias=None))]
    fn result(&self, py: Python<'_>, classifier: Option<&Bound<'_, PyAny>>, bias: Option<&Bound<'_, PyAny>>) -> PyResult<Py<PyAny>> {
        guard(|| {
            let w = classifier.map(|c| array2(py, c, "classifier", false)).transpose()?;
            let b = bias.map(|b| vector(py, b, "bias")).transpose()?;
            let wv = w.as_ref().map(Held::view);
            let inner = &self.inner;
            let report = py.detach(|| inner.result(wv.as_ref(), b.as_deref(), &Names::ARGUMENTS)).map_err(value_error)?;
            to_dict(py, &report)
        })
    }

    /// Samples fed so far.
    #[getter]
    fn samples(&self) -> u64 {
        self.inner.samples()
    }

    /// Batches fed so far.
    #[getter]
    fn batches(&self) -> u64 {
        self.inner.batches()
    }

    /// K.
    #[getter]
    fn classes(&self) -> usize {
        self.inner.classes()
    }

    /// d.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }

    fn __repr__(&self) -> String {
        format!("Accumulator(classes={}, dim={}, samples={}, batches={})", self.inner.classes(), self.inner.dim(), self.inner.samples(), self.inner.batches())
    }
}

fn count(v: i64, name: &str, least: i64) -> PyResult<usize> {
    if v < least {
        return Err(PyValueError::new_err(format!("{name} must be at least {least} (got {v})")));
    }
    usize::try_from(v).map_err(|_| PyValueError::new_err(format!("{name} is too large (got {v})")))
}

/// `per_set`: one count or one per multiplicity.
fn per_set(obj: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let list: Vec<i64> = match obj.extract::<i64>() {
        Ok(v) => vec![v],
        Err(_) => obj.extract::<Vec<i64>>().map_err(|_| PyTypeError::new_err("per_set: expected an int or a list of ints (one per multiplicity)"))?,
    };
    list.into_iter().map(|v| count(v, "per_set", 0)).collect()
}

/// The configuration from the keyword arguments `predict` and `ufm` share; a `None` takes the
/// CLI's default (one sample per set, d = K, the default weight decays).
#[allow(clippy::too_many_arguments)]
fn config(
    classes: i64,
    max_labels: i64,
    dim: Option<i64>,
    per: Option<&Bound<'_, PyAny>>,
    lw: Option<f64>,
    lh: Option<f64>,
    lb: Option<f64>,
    loss: &str,
    skew: Option<f64>,
    singletons: bool,
) -> PyResult<mlab_nc::model::config::ValidConfig> {
    let k = count(classes, "classes", 2)?;
    let defaults = UfmConfig::new(2, 1);
    let base = UfmConfig {
        classes: k,
        max_labels: count(max_labels, "max_labels", 1)?,
        dim: dim.map_or(Ok(k), |d| count(d, "dim", 1))?,
        per_set: per.map_or(Ok(vec![1]), per_set)?,
        lambda_w: lw.unwrap_or(defaults.lambda_w),
        lambda_h: lh.unwrap_or(defaults.lambda_h),
        lambda_b: lb.unwrap_or(defaults.lambda_b),
        loss: Loss::from_name(loss).map_err(value_error)?,
    };
    match skew {
        None => base.validate(),
        Some(rho) => {
            if !(rho.is_finite() && rho > 0.0) {
                return Err(PyValueError::new_err(format!("class_skew must be a finite number > 0 (got {rho})")));
            }
            let v = base.clone().validate().map_err(value_error)?;
            let counts = skewed_counts(&v.config, rho, singletons);
            if let Some(note) = skew_note(rho, &counts) {
                Python::attach(|py| PyErr::warn(py, &py.get_type::<pyo3::exceptions::PyUserWarning>(), &std::ffi::CString::new(note).unwrap_or_default(), 1))?;
            }
            base.validate_with_counts(counts)
        }
    }
    .map_err(value_error)
}

/// The theorem's predicted global optimum of the UFM (no solve): the dict of
/// `mlab-nc predict --json` (keys config, samples, predicted).
#[pyfunction]
#[pyo3(signature = (classes, max_labels, per_set=None, lambda_w=None, lambda_h=None, loss="pal", *, dim=None, class_skew=None, skew_singletons_only=false))]
#[allow(clippy::too_many_arguments)]
fn predict(
    py: Python<'_>,
    classes: i64,
    max_labels: i64,
    per_set: Option<&Bound<'_, PyAny>>,
    lambda_w: Option<f64>,
    lambda_h: Option<f64>,
    loss: &str,
    dim: Option<i64>,
    class_skew: Option<f64>,
    skew_singletons_only: bool,
) -> PyResult<Py<PyAny>> {
    guard(|| {
        let cfg = config(classes, max_labels, dim, per_set, lambda_w, lambda_h, None, loss, class_skew, skew_singletons_only)?;
        let report = py.detach(|| PredictionReport::new(&cfg));
        to_dict(py, &report)
    })
}

/// Solves the UFM from random starts, compares with the theorem and gives a verdict: the
/// dict of `mlab-nc ufm --json`. Keyword options are the CLI's flags with underscores.
#[pyfunction]
#[pyo3(signature = (classes, max_labels, *, dim=None, per_set=None, lambda_w=None, lambda_h=None, lambda_b=None, loss="pal", class_skew=None,
    skew_singletons_only=false, seed=0, seeds=1, max_iters=None, tol_grad=None, init_std=None, history=None, solver="in-place", tol_stop=None,
    time_limit=None, trace=false, tol_objective=None, tol_certificate=None, tol_geometry=None, tol_nc1=None, tol_angle=None, tol_bias=None))]
#[allow(clippy::too_many_arguments)]
fn ufm(
    py: Python<'_>,
    classes: i64,
    max_labels: i64,
    dim: Option<i64>,
    per_set: Option<&Bound<'_, PyAny>>,
    lambda_w: Option<f64>,
    lambda_h: Option<f64>,
    lambda_b: Option<f64>,
    loss: &str,
    class_skew: Option<f64>,
    skew_singletons_only: bool,
    seed: i64,
    seeds: i64,
    max_iters: Option<i64>,
    tol_grad: Option<f64>,
    init_std: Option<f64>,
    history: Option<i64>,
    solver: &str,
    tol_stop: Option<f64>,
    time_limit: Option<f64>,
    trace: bool,
    tol_objective: Option<f64>,
    tol_certificate: Option<f64>,
    tol_geometry: Option<f64>,
    tol_nc1: Option<f64>,
    tol_angle: Option<f64>,
    tol_bias: Option<f64>,
) -> PyResult<Py<PyAny>> {
    guard(|| {
        let cfg = config(classes, max_labels, dim, per_set, lambda_w, lambda_h, lambda_b, loss, class_skew, skew_singletons_only)?;
        let (s, t) = (SolveParams::default(), Tolerances::default());
        let opts = VerifyOptions {
            solve: SolveParams {
                max_iters: max_iters.map_or(Ok(s.max_iters as usize), |v| count(v, "max_iters", 1))? as u64,
                tol_grad: tol_grad.unwrap_or(s.tol_grad),
                init_std: init_std.unwrap_or(s.init_std),
                history: history.map_or(Ok(s.history), |v| count(v, "history", 1))?,
                method: Method::from_name(solver).map_err(value_error)?,
                tol_stop: tol_stop.unwrap_or(s.tol_stop),
                time_limit,
                ..s
            },
            tol: Tolerances {
                objective: tol_objective.unwrap_or(t.objective),
                certificate: tol_certificate.unwrap_or(t.certificate),
                geometry: tol_geometry.unwrap_or(t.geometry),
                nc1: tol_nc1.unwrap_or(t.nc1),
                angle_deg: tol_angle.unwrap_or(t.angle_deg),
                bias: tol_bias.unwrap_or(t.bias),
            },
        };
        let (seed, seeds) = (count(seed, "seed", 0)? as u64, count(seeds, "seeds", 1)? as u64);
        let report = interruptible(py, || mlab_nc::commands::verify::ufm(&cfg, seed, seeds, &opts, trace))?;
        to_dict(py, &report)
    })
}

/// Input arrays copied by the binding so far (for tests of the no-copy path).
#[pyfunction]
fn _copies() -> u64 {
    COPIES.load(Ordering::Relaxed)
}

/// Multi-label neural collapse: trusted metrics, streaming measurement in a training loop,
/// and the UFM theorem's prediction and verdict (the native part of `mlab_nc`).
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(measure, m)?)?;
    m.add_function(wrap_pyfunction!(predict, m)?)?;
    m.add_function(wrap_pyfunction!(ufm, m)?)?;
    m.add_function(wrap_pyfunction!(_copies, m)?)?;
    m.add_class::<Accumulator>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
