from typing import Any, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike
__version__: str

def measure(
    features: ArrayLike,
    labels: ArrayLike,
    classifier: Optional[ArrayLike] = None,
    bias: Optional[ArrayLike] = None,
) -> dict[str, Any]:
    """Neural-collapse metrics of one set of features, as ``mlab-nc measure --json`` computes them.

    features: N x d, float32 or float64, any memory order (CPU torch tensors work);
    C or Fortran order (float32 or float64) is read in place, a row at a time, without a copy.
    labels: N x K multi-hot (0/1; bool, integer or float).
    classifier: optional K x d (``nn.Linear.weight``); bias: optional length K.
    Raises ValueError (shapes, NaN or infinite values, labels not 0/1, a sample with no label,
    K < 2, a classifier of the wrong size) or TypeError (not an array, unsupported dtype).
    """

class Accumulator:
    """Streaming measurement over a data loader, in one pass, in float64.

    ``update(features, labels)`` per batch; ``result(classifier=None, bias=None)`` gives the dict
    that ``measure`` gives on all the batches concatenated. Keeps the count and mean of every
    label set and the d x d within-set scatter, merged batch by batch (Chan et al.).
    """

    def __init__(self, classes: int, dim: int) -> None: ...
    def update(self, features: ArrayLike, labels: ArrayLike) -> None:
        """Add one batch (n x d features, n x K multi-hot labels). A batch that fails a check
        raises ValueError or TypeError and leaves the accumulator unchanged."""
    def result(self, classifier: Optional[ArrayLike] = None, bias: Optional[ArrayLike] = None) -> dict[str, Any]:
        """The metrics of every batch so far (keys of ``measure --json``)."""
    @property
    def samples(self) -> int: ...
    @property
    def batches(self) -> int: ...
    @property
    def classes(self) -> int: ...
    @property
    def dim(self) -> int: ...

def predict(
    classes: int,
    max_labels: int,
    per_set: Union[int, Sequence[int], None] = None,
    lambda_w: Optional[float] = None,
    lambda_h: Optional[float] = None,
    loss: str = "pal",
    *,
    dim: Optional[int] = None,
    class_skew: Optional[float] = None,
    skew_singletons_only: bool = False,
) -> dict[str, Any]:
    """The theorem's predicted global optimum of the UFM, without a solve: the dict of
    ``mlab-nc predict --json`` (keys ``config``, ``samples``, ``predicted``). Defaults are the CLI's
    (per_set 1, lambda 5e-3, d = K); loss is "pal", "pal-mean" or "bce"."""

def ufm(
    classes: int,
    max_labels: int,
    *,
    dim: Optional[int] = None,
    per_set: Union[int, Sequence[int], None] = None,
    lambda_w: Optional[float] = None,
    lambda_h: Optional[float] = None,
    lambda_b: Optional[float] = None,
    loss: str = "pal",
    class_skew: Optional[float] = None,
    skew_singletons_only: bool = False,
    seed: int = 0,
    seeds: int = 1,
    max_iters: Optional[int] = None,
    tol_grad: Optional[float] = None,
    init_std: Optional[float] = None,
    history: Optional[int] = None,
    solver: str = "in-place",
    tol_stop: Optional[float] = None,
    time_limit: Optional[float] = None,
    trace: bool = False,
    tol_objective: Optional[float] = None,
    tol_certificate: Optional[float] = None,
    tol_geometry: Optional[float] = None,
    tol_nc1: Optional[float] = None,
    tol_angle: Optional[float] = None,
    tol_bias: Optional[float] = None,
) -> dict[str, Any]:
    """Solve the UFM from random starts, certify global optimality, and give a verdict: the dict
    of ``mlab-nc ufm --json``. Options are the CLI's flags with underscores; None means the
    CLI's default."""

def _copies() -> int: ...
