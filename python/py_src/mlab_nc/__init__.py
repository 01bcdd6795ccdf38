"""mlab_nc: multi-label neural collapse, measured and verified.

- ``measure(features, labels, classifier=None, bias=None)``: the neural-collapse metrics of one
  set of features (NC1, NC2-W, NC2-H, NC3, the tag-wise angle and scale, the synthesis weights).
- ``Accumulator(classes, dim)``: the same metrics streamed batch by batch over a data loader,
  in float64, without holding the features in memory.
- ``predict(classes, max_labels, per_set, lambda_w, lambda_h)``: the theorem's predicted optimum
  of the unconstrained feature model (UFM).
- ``ufm(classes, max_labels, **options)``: solve the UFM, certify the optimum, and give a verdict.

Every function returns a plain dict with the keys of the ``mlab-nc`` CLI's JSON, and raises
``ValueError`` or ``TypeError`` with the CLI's one-line message on bad input.
"""

from ._native import Accumulator, __version__, measure, predict, ufm

__all__ = ["Accumulator", "measure", "predict", "ufm", "__version__"]
