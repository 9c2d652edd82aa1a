"""eSPA+ (entropy-optimal Scalable Probabilistic Approximation), a scikit-learn classifier.

Definitions (see ``docs/espa.md`` and ``/work/shared/design/espa.md``)
--------------------------------------------------------------------
X (T x D), labels y_t in {0..M-1}, sample weights w_t with total weight N = sum(w). Learned: box
centres S (D x K), feature weights W (D, on the simplex) and Lambda (M x K, column-stochastic,
Lambda_mk = P(class m | box k)); every sample belongs to one box k(t). The loss, in the reference
normalisation of Horenko's MATLAB code (espa.md section 2), weighted:

    L = 1/(N D) sum_t w_t sum_d W_d (X_td - S_d,k(t))^2 + eps_W/D sum_d W_d ln W_d
        - eps_C/(N M) sum_t w_t ln Lambda_{y_t, k(t)}          (Lambda floored at 1e-12)

One iteration runs four exact block minimisers (eSPA+ order), so L never increases:
assign k(t) (the only step that sees the labels), W = softmax(-b / (N eps_W)) with
b_d = sum_t w_t (X_td - S_d,k(t))^2 for the previous S, S = weighted box means, Lambda = weighted
class frequencies per box. Boxes left empty are dropped. After the best restart, the training
samples are reassigned without labels (nearest centre in the W metric) and Lambda is recomputed
("unbiasing"); prediction is the Lambda column of the nearest box.

Implementation
--------------
The math is written once against the Python array API (``array_api_compat``), so numpy, torch,
cupy and ``array_api_strict`` run the same code. Each iteration is one pass over the samples in
chunks: per chunk, assign and accumulate the per-box weighted counts, sums of X and class counts
(one-hot matmuls, no scatter); W, S, Lambda and the loss then follow from these sums and the
weighted sums of squares of the centred data, computed once. Memory is O(chunk_size * K) beyond X.
"""

from __future__ import annotations

import importlib
import math
import warnings
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, Literal

import array_api_compat
import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from entropice_core.arrays import to_host
from entropice_core.config import ArrayBackend

#: Lambda is floored here inside the logarithm, as in the reference MATLAB code.
LAMBDA_FLOOR = 1e-12
#: Elements of one chunk's (chunk x max(K, D)) temporaries when ``chunk_size`` is None: 16 MiB.
AUTO_CHUNK_ELEMENTS = 2**21
#: Boxes whose costs are recomputed for every sample when checking which samples keep their
#: box (the largest moves); the other moves loosen the bounds (see _settled).
EXACT_BOXES = 8
#: Bounds are first kept after a sweep that moved fewer than this fraction of the samples.
TRACK_BELOW = 0.01
#: Array namespaces by backend name; imported only when asked for.
BACKENDS = {
    "numpy": "array_api_compat.numpy",
    "torch": "array_api_compat.torch",
    "cupy": "array_api_compat.cupy",
    "array_api_strict": "array_api_strict",
}

#: The project's array backends (config.ArrayBackend) plus the strict one tests use.
Backend = Literal[ArrayBackend, "array_api_strict"]


def array_backend(name: str) -> ModuleType:
    """Return the array-API namespace for ``name``; GPU libraries are imported only here.

    Parameters
    ----------
    name : str
        A key of :data:`BACKENDS`: ``numpy``, ``torch``, ``cupy`` or ``array_api_strict``.

    Returns
    -------
    ModuleType
        The array-API compatible namespace.

    Raises
    ------
    ValueError
        If the backend is unknown.
    ImportError
        If its package is not installed (the message names the extra).
    """
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r} is unknown; use one of {sorted(BACKENDS)}")
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as err:
        extra = "gpu" if name in ("torch", "cupy") else "dev"
        raise ImportError(
            f"backend={name!r} needs the {name} package: install it with "
            f"`uv sync --extra {extra}` (pip install 'entropice[{extra}]'), or use backend='numpy'"
        ) from err


class ESPAParams(BaseModel):
    """The estimator's hyperparameters, validated at fit (so errors name the bad value)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    n_clusters: int = Field(ge=1, description="K, the number of boxes (upper bound: pruned)")
    eps_C: float = Field(ge=0, description="weight of the label term")
    eps_W: float = Field(gt=0, description="weight of W's entropy (large: uniform W)")
    max_iter: int = Field(ge=1)
    tol: float = Field(ge=0, description="stop when the loss decreases by <= tol * |loss|")
    n_init: int = Field(ge=1, description="restarts; the lowest training loss is kept")
    readout: Literal["hard", "soft"]
    backend: Backend
    device: Any = None
    dtype: Literal["float64", "float32"]
    chunk_size: int | None = Field(default=None, ge=1)


@dataclass(frozen=True)
class _Data:
    """The training data on the backend, with what every pass needs."""

    X: Any  # (T, D + M): the features and the one-hot labels, compute dtype
    y: Any  # (T,) int64 class indices
    w: Any  # (T,) float64 weights
    mean: Any  # (D,) weighted mean of X
    sumsq: Any  # (D,) sum_t w_t (X_td - mean_d)^2
    reach: Any  # (D,) >= (X_td - S_dk)^2 for any sample and any centre (a weighted box mean)
    peak: Any  # (D,) >= X_td^2 for any sample
    total: float  # N, the total weight
    n_features: int
    n_classes: int
    chunk: int


@dataclass(frozen=True)
class _State:
    """The model of one iteration: centres S (D, K), weights W (D,), Lambda (M, K); float64."""

    S: Any
    W: Any
    Lam: Any


@dataclass(frozen=True)
class _Boxes:
    """The samples' boxes (T,), -1 for none yet, and per-box sums over them.

    The sums are (K, D + M + 2) columns of weighted sums of X, class weights, total weight n
    and sample count; ``moved`` counts the samples that changed box in the sweep that made
    them. The sums are updated in place by the moves; ``churn`` (K,) is the weight that went
    in or out of each box since its sums were last computed afresh, which bounds their
    rounding (see _refresh).
    """

    box: Any
    sums: Any
    churn: Any
    n_features: int
    moved: int = 0

    @classmethod
    def empty(cls, xp: ModuleType, data: _Data, K: int) -> _Boxes:
        device = array_api_compat.device(data.w)
        D = data.n_features
        return cls(
            box=xp.full(data.X.shape[0], -1, dtype=xp.int64, device=device),
            sums=xp.zeros((K, D + data.n_classes + 2), dtype=xp.float64, device=device),
            churn=xp.zeros(K, dtype=xp.float64, device=device),
            n_features=D,
            moved=data.X.shape[0],
        )

    @property
    def Xsum(self) -> Any:
        return self.sums[:, : self.n_features]

    @property
    def counts(self) -> Any:
        return self.sums[:, self.n_features : -2]

    @property
    def n(self) -> Any:
        return self.sums[:, -2]

    @property
    def size(self) -> Any:
        return self.sums[:, -1]


@dataclass(frozen=True)
class _Run:
    """One restart: its final state, loss per iteration and whether it converged."""

    state: _State
    losses: list[float]
    converged: bool


@dataclass(frozen=True)
class _Metric:
    """The W metric of a state, ready for chunks: cost = X @ scaled + bias."""

    scaled: Any  # (D, K) -2/D W_d S_dk, compute dtype
    bias: Any  # (K,) 1/D sum_d W_d S_dk^2

    @classmethod
    def of(cls, xp: ModuleType, state: _State, dtype: Any) -> _Metric:
        WS = state.W[:, None] * state.S
        D = state.S.shape[0]
        return cls(scaled=xp.astype(WS * (-2.0 / D), dtype), bias=xp.sum(WS * state.S, axis=0) / D)


def _box_costs(xp: ModuleType, X: Any, metric: _Metric) -> Any:
    """Cost (chunk, K): (1/D) sum_d W_d (x_d - S_dk)^2 up to a per-row constant."""
    return xp.astype(X @ metric.scaled, xp.float64, copy=False) + metric.bias


def _chunks(n: int, size: int) -> list[slice]:
    """Consecutive row slices of at most ``size`` rows (stops in bounds, as the array API asks)."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _segment_sums(xp: ModuleType, values: Any, labels: Any, K: int) -> Any:
    """Sum the rows of ``values`` (n, C) by label 0..K-1 into (K, C); other labels are ignored.

    A stable sort and a prefix sum: memory-bound and free of scatter-adds, unlike a one-hot
    matrix product whose cost grows with K (and whose (K, n) @ (n, C) shape is slow in OpenBLAS).
    """
    order = xp.argsort(labels, stable=True)
    prefix = xp.cumulative_sum(xp.take(values, order, axis=0), axis=0)
    ordered = xp.take(labels, order)
    ids = xp.arange(K, dtype=ordered.dtype, device=array_api_compat.device(ordered))

    def before(index: Any) -> Any:  # sum of the first ``index`` sorted rows
        rows = xp.take(prefix, xp.clip(index - 1, min=0), axis=0)
        return xp.where((index > 0)[:, None], rows, 0.0)

    start = xp.searchsorted(ordered, ids, side="left")
    return before(xp.searchsorted(ordered, ids, side="right")) - before(start)


@dataclass(frozen=True)
class _Bounds:
    """What the last sweep proved about each sample, valid under ``state``.

    ``upper`` >= its cost for its own box, ``lower`` <= its cost for every other box (full
    costs: data term plus label term), and [``low``, ``high``] holds their box-independent part
    (1/D) sum_d W_d x_d^2, which the cost matrix product leaves out.
    """

    upper: Any
    lower: Any
    low: Any
    high: Any
    state: _State


def _label_costs(xp: ModuleType, Lam: Any, eps_C: float) -> Any:
    """Return the label term of the cost (M, K): -(eps_C / M) ln Lambda >= 0, Lambda floored."""
    return -xp.log(xp.clip(Lam, min=LAMBDA_FLOOR)) * (eps_C / Lam.shape[0])


#: A feature's weight ratio W'/W is used as a factor only within [1/RATIO_LIMIT, RATIO_LIMIT];
#: outside (a weight that appears from zero, or grows or shrinks by more), the feature's term
#: is bounded by its extent instead (see _Reweighting).
RATIO_LIMIT = 2.0**32


@dataclass(frozen=True)
class _Reweighting:
    """How a training sample's data term can change when W becomes W'.

    For q = (1/D) sum_d W_d (x_d - c_d)^2, split the features into tracked ones, whose ratio
    r_d = W'_d / W_d lies in [s, g] (s <= 1 <= g), and free ones, whose terms are bounded by the
    extents of the data (``reach``: (x_d - c_d)^2 <= reach_d for c any box mean). Then

        s * max(q - A, 0) <= q' <= g q + A'    with A = (1/D) sum_free W_d reach_d,
                                                    A' = (1/D) sum_free W'_d reach_d,

    and likewise, with ``peak`` for reach, for the row term (1/D) sum_d W_d x_d^2. Every
    quantity is finite: a feature whose weight appears from zero, or whose ratio leaves
    [1/RATIO_LIMIT, RATIO_LIMIT], is free. Which other features are free is chosen to keep the
    bounds tight: the split is the one, among freeing the features of smallest term first, that
    minimises (g - s) * typical + A + A' (``typical`` a typical cost).
    """

    shrink: Any  # s
    grow: Any  # g
    lose: Any  # A
    gain: Any  # A'
    row_lose: Any
    row_gain: Any

    @classmethod
    def of(cls, xp: ModuleType, data: _Data, W: Any, W_new: Any, typical: Any) -> _Reweighting:
        D = data.n_features
        finite = (W > 0) & (W_new <= W * RATIO_LIMIT) & (W_new * RATIO_LIMIT >= W)
        ratio = xp.where(finite, W_new / xp.where(finite, W, 1.0), 1.0)
        term = xp.maximum(W, W_new) * data.reach  # the most a feature adds to a data term
        # candidate splits: only the forced features free, or also those with term <= term_j
        free = xp.concat(
            [~finite[None, :], ~finite[None, :] | (term[None, :] <= term[:, None])], axis=0
        )
        grow = xp.maximum(xp.max(xp.where(free, 1.0, ratio[None, :]), axis=1), 1.0)
        shrink = xp.minimum(xp.min(xp.where(free, 1.0, ratio[None, :]), axis=1), 1.0)
        lose = xp.sum(xp.where(free, W * data.reach, 0.0), axis=1) / D
        gain = xp.sum(xp.where(free, W_new * data.reach, 0.0), axis=1) / D
        best = int(xp.argmin((grow - shrink) * typical + lose + gain))
        chosen = free[best, :]
        return cls(
            shrink=shrink[best],
            grow=grow[best],
            lose=lose[best],
            gain=gain[best],
            row_lose=xp.sum(xp.where(chosen, W * data.peak, 0.0)) / D,
            row_gain=xp.sum(xp.where(chosen, W_new * data.peak, 0.0)) / D,
        )


def _settled(
    xp: ModuleType,
    data: _Data,
    state: _State,
    weights: Any,
    boxes: _Boxes,
    bounds: _Bounds,
    eps_C: float,
) -> tuple[Any, _Bounds]:
    """Find the samples that provably keep their box under ``state``.

    The result is a mask (bool, (T,)) and the bounds carried over to ``state``.

    Since ``bounds.state``, W changed (a data term q becomes at least s max(q - A, 0) and at
    most g q + A', see _Reweighting) and the boxes that gained or lost samples changed centre
    (by a distance e_k in the new metric) and label costs l. A sample's cost of its own box,
    c = q + l, then becomes at most g c + A' if the box is unchanged, and at most
    (sqrt(g (c - l) + A') + e)^2 + l' if it changed (triangle inequality). Its cost c of
    another box becomes at least s max(c - A, 0) if unchanged, and at least
    v - 2 e sqrt(v) + (l' - s l) with v = max(s max(c - A, 0), e^2) if changed. Samples these
    bounds leave unsure get the costs of the ``EXACT_BOXES`` boxes that moved most computed
    exactly (a product over those boxes only), so one large move does not unsettle them all.
    A sample keeps its box when its upper bound stays below its lower bound by more than the
    rounding of the products. Every step is finite for any reachable state: bounds are
    non-negative, lower bounds finite while there are two boxes, and with one box left every
    sample keeps it.
    """
    old, D, K = bounds.state, data.n_features, state.S.shape[1]
    if K == 1:  # nothing to choose: every sample keeps the only box
        device = array_api_compat.device(bounds.upper)
        return xp.ones(bounds.upper.shape, dtype=xp.bool, device=device), replace(
            bounds, state=state
        )
    change = _Reweighting.of(xp, data, old.W, state.W, xp.mean(bounds.upper))
    grow = change.grow
    label, old_label = _label_costs(xp, state.Lam, eps_C), _label_costs(xp, old.Lam, eps_C)
    changed = xp.any(state.S != old.S, axis=0) | xp.any(state.Lam != old.Lam, axis=0)
    shift = xp.sqrt(xp.sum(state.W[:, None] * (state.S - old.S) ** 2, axis=0) / D)
    low = change.shrink * xp.clip(bounds.low - change.row_lose, min=0.0)
    high = grow * bounds.high + change.row_gain
    error = _rounding(xp, data, state, label, high)
    own = data.y * K + boxes.box
    data_term = bounds.upper - xp.take(xp.reshape(old_label, (-1,)), own)
    distance = xp.sqrt(xp.clip(grow * data_term + change.gain, min=0.0))
    moved = (distance + xp.take(shift, boxes.box)) ** 2
    moved = moved + xp.take(xp.reshape(label, (-1,)), own)
    upper = xp.where(xp.take(changed, boxes.box), moved, grow * bounds.upper + change.gain)
    moves = _Moves(change=change, shift=shift, label=label, old_label=old_label)
    lower = moves.lower(xp, bounds.lower, data.y, changed)
    settled = upper + 2 * error < lower
    n_changed = int(xp.sum(xp.astype(changed, xp.int64)))
    if bool(xp.all(settled)) or n_changed == 0:
        return settled, _Bounds(upper=upper, lower=lower, low=low, high=high, state=state)
    exact = xp.argsort(xp.where(changed, -shift, xp.inf), stable=True)
    exact = exact[: min(EXACT_BOXES, n_changed)]
    ids = xp.arange(K, dtype=exact.dtype, device=array_api_compat.device(exact))
    rest = changed & ~xp.any(ids[:, None] == exact[None, :], axis=1)
    columns = xp.take(weights, exact, axis=1)
    unsure = xp.nonzero(~settled)[0]
    uppers, lowers = [], []
    for part in _chunks(unsure.shape[0], data.chunk):
        rows = unsure[part]
        cost = xp.astype(xp.take(data.X, rows, axis=0) @ columns, xp.float64, copy=False)
        mine = xp.take(boxes.box, rows)[:, None] == exact[None, :]
        nearest = xp.min(xp.where(mine, xp.inf, cost), axis=1) + xp.take(low, rows)
        recomputed = xp.sum(xp.where(mine, cost, 0.0), axis=1) + xp.take(high, rows)
        uppers.append(xp.where(xp.any(mine, axis=1), recomputed, xp.take(upper, rows)))
        others = moves.lower(xp, xp.take(bounds.lower, rows), xp.take(data.y, rows), rest)
        lowers.append(xp.minimum(others, nearest))
    upper[~settled], lower[~settled] = xp.concat(uppers), xp.concat(lowers)
    return upper + 2 * error < lower, _Bounds(
        upper=upper, lower=lower, low=low, high=high, state=state
    )


@dataclass(frozen=True)
class _Moves:
    """How the model changed between two sweeps, for :func:`_settled`.

    The reweighting, each centre's move in the new metric and the label costs (M, K) after and
    before.
    """

    change: _Reweighting
    shift: Any
    label: Any
    old_label: Any

    def lower(self, xp: ModuleType, lower: Any, y: Any, changed: Any) -> Any:
        """Bound from below the costs of other boxes when the boxes in the mask ``changed`` moved.

        The bounds follow from the previous ones (``lower``, finite, of samples of classes
        ``y``).
        """
        s = self.change.shrink
        scaled = s * xp.clip(lower - self.change.lose, min=0.0)  # >= s max(q - A, 0) + s l
        if not bool(xp.any(changed)):
            return scaled
        move = xp.max(xp.where(changed, self.shift, 0.0))
        drift = xp.where(changed[None, :], self.label - s * self.old_label, xp.inf)
        least = xp.maximum(scaled, move**2)  # where v - 2 e sqrt(v) is smallest
        loosened = least - 2 * xp.sqrt(least) * move + xp.take(xp.min(drift, axis=1), y)
        return xp.minimum(scaled, loosened)


def _rounding(xp: ModuleType, data: _Data, state: _State, label: Any, row: Any) -> Any:
    """Bound on the rounding error of a cost from the matrix product, per sample.

    A dot product of n terms errs by at most n eps times the sum of their magnitudes, here at
    most 2 (row + max centre term) + max label cost (Cauchy-Schwarz); doubled for safety.
    """
    eps = xp.finfo(data.X.dtype).eps
    centre = xp.max(xp.sum(state.W[:, None] * state.S**2, axis=0)) / data.n_features
    return 2 * (data.X.shape[1] + 4) * eps * (2 * (row + centre) + xp.max(label))


def _bounds_of(
    xp: ModuleType, data: _Data, state: _State, X: Any, cost: Any, box: Any
) -> tuple[Any, Any, Any]:
    """Exact bounds (upper, lower, row term) of rows X with costs ``cost`` and boxes ``box``."""
    D, K = data.n_features, cost.shape[1]
    row = (xp.astype(X[:, :D], xp.float64) ** 2) @ state.W / D
    cost = xp.astype(cost, xp.float64, copy=False)
    ids = xp.arange(K, dtype=box.dtype, device=array_api_compat.device(box))
    own = ids == box[:, None]
    upper = xp.min(cost, axis=1) + row  # the own box is the cheapest
    lower = xp.min(xp.where(own, xp.inf, cost), axis=1) + row
    return upper, lower, row


def _sweep(
    xp: ModuleType,
    data: _Data,
    state: _State,
    boxes: _Boxes,
    eps_C: float,
    bounds: _Bounds | None = None,
    track: bool = False,
) -> tuple[_Boxes, float, _Bounds | None]:
    """Reassign the samples (label term if eps_C > 0) and update the box sums by the moves.

    With the ``bounds`` of the previous sweep, only the samples they cannot settle are
    reassigned, late in a descent a small fraction; the others provably keep their box. Only
    samples that change box touch the sums. Returns the new boxes, sum_t w_t min_k cost_tk
    (for the read-out temperature; meaningful when every sample was swept) and the bounds for
    the next sweep (computed when ``bounds`` is given or ``track`` is set, otherwise None).
    """
    K, T = state.S.shape[1], data.X.shape[0]
    metric = _Metric.of(xp, state, data.X.dtype)
    # The label term per (class, box) with the metric's per-box constant folded in, stacked
    # under the metric: [x, one-hot(y)] @ this is the whole cost in one matrix product.
    offset = metric.bias + _label_costs(xp, state.Lam, eps_C)
    weights = xp.concat([metric.scaled, xp.astype(offset, data.X.dtype)], axis=0)
    if bounds is not None:
        settled, bounds = _settled(xp, data, state, weights, boxes, bounds, eps_C)
        swept = xp.nonzero(~settled)[0]
        parts: list[Any] = [swept[rows] for rows in _chunks(swept.shape[0], data.chunk)]
    else:
        parts = _chunks(T, data.chunk)
    sums, churn, new_boxes, proven, cost_sum, n_moved = boxes.sums, boxes.churn, [], [], 0.0, 0
    for rows in parts:
        if isinstance(rows, slice):
            X, w, old = data.X[rows, :], data.w[rows], boxes.box[rows]
        else:
            X, w = xp.take(data.X, rows, axis=0), xp.take(data.w, rows)
            old = xp.take(boxes.box, rows)
        cost = X @ weights
        box = xp.argmin(cost, axis=1)  # ties go to the lowest index
        new_boxes.append(box)
        if eps_C == 0:
            lowest = xp.astype(xp.min(cost, axis=1), xp.float64, copy=False)
            cost_sum = cost_sum + float(xp.sum(w * lowest))
        if bounds is not None or track:
            proven.append(_bounds_of(xp, data, state, X, cost, box))
        moved = xp.nonzero(box != old)[0]
        n_moved += moved.shape[0]
        if moved.shape[0] == 0:
            continue
        if moved.shape[0] < X.shape[0]:
            X, w = xp.take(X, moved, axis=0), xp.take(w, moved)
            old, box = xp.take(old, moved), xp.take(box, moved)
        w = w[:, None]
        values = xp.concat([w * xp.astype(X, xp.float64, copy=False), w, xp.ones_like(w)], axis=1)
        added, removed = _segment_sums(xp, values, box, K), _segment_sums(xp, values, old, K)
        sums = sums + added - removed
        # a box's sums are differences of prefix sums over all the moved samples: they round
        # by about eps times the moved weight of the chunk
        touched = (added[:, -1] > 0) | (removed[:, -1] > 0)
        churn = churn + xp.where(touched, xp.sum(w), 0.0)
    if bounds is None:
        box = xp.concat(new_boxes) if len(new_boxes) > 1 else new_boxes[0]
        if track:
            upper, lower, row = (xp.concat(pieces) for pieces in zip(*proven, strict=True))
            bounds = _Bounds(upper=upper, lower=lower, low=row, high=row, state=state)
    else:
        box = xp.asarray(boxes.box, copy=True)
        upper, lower, low, high = (
            xp.asarray(a, copy=True) for a in (bounds.upper, bounds.lower, bounds.low, bounds.high)
        )
        if new_boxes:
            box[~settled] = xp.concat(new_boxes)
            exact_upper, exact_lower, row = (
                xp.concat(pieces) for pieces in zip(*proven, strict=True)
            )
            upper[~settled], lower[~settled] = exact_upper, exact_lower
            low[~settled], high[~settled] = row, row
        bounds = _Bounds(upper=upper, lower=lower, low=low, high=high, state=state)
    boxes = _Boxes(box=box, sums=sums, churn=churn, n_features=boxes.n_features, moved=n_moved)
    return _refresh(xp, data, boxes), cost_sum, bounds


#: A box's sums are computed afresh when its weight n falls below this fraction of the weight
#: that passed through the updates of its sums (its churn): they round by about eps times the
#: churn, which would no longer be small against n (relative error above about 1e-10).
STALE_BELOW = 1e-6


def _refresh(xp: ModuleType, data: _Data, boxes: _Boxes) -> _Boxes:
    """Recompute the sums of the boxes whose in-place sums may have lost their accuracy.

    That is a light sample left behind by heavy ones; with sample weights near zero the weight
    n would otherwise come out 0 or negative. The sums come from their samples by a one-hot
    product, in which other boxes' samples add exact zeros. Rare, and then over few samples.
    """
    stale = (boxes.size > 0) & (boxes.n <= STALE_BELOW * boxes.churn)
    if not bool(xp.any(stale)):
        return boxes
    K = boxes.sums.shape[0]
    ids = xp.nonzero(stale)[0]
    rows = xp.nonzero(xp.take(stale, boxes.box))[0]
    box = xp.astype(xp.take(boxes.box, rows), ids.dtype)
    w = xp.take(data.w, rows)[:, None]
    X = xp.astype(xp.take(data.X, rows, axis=0), xp.float64)
    values = xp.concat([w * X, w, xp.ones_like(w)], axis=1)
    fresh = xp.astype(ids[:, None] == box[None, :], xp.float64) @ values  # (stale, C)
    every = xp.arange(K, dtype=ids.dtype, device=array_api_compat.device(ids))
    fresh = xp.astype(every[:, None] == ids[None, :], xp.float64) @ fresh  # (K, C), exact
    sums = xp.where(stale[:, None], fresh, boxes.sums)
    return replace(boxes, sums=sums, churn=xp.where(stale, fresh[:, -2], boxes.churn))


def _prune(xp: ModuleType, state: _State, boxes: _Boxes) -> tuple[_State, _Boxes]:
    """Drop the boxes left without samples and renumber the rest."""
    full = boxes.size > 0
    keep = xp.nonzero(full)[0]
    if keep.shape[0] == boxes.size.shape[0]:
        return state, boxes
    renumber = xp.cumulative_sum(xp.astype(full, xp.int64)) - 1
    state = _State(
        S=xp.take(state.S, keep, axis=1), W=state.W, Lam=xp.take(state.Lam, keep, axis=1)
    )
    boxes = replace(
        boxes,
        box=xp.take(renumber, boxes.box),
        sums=xp.take(boxes.sums, keep, axis=0),
        churn=xp.take(boxes.churn, keep),
    )
    return state, boxes


def _entropy_term(xp: ModuleType, W: Any) -> Any:
    return xp.sum(W * xp.log(xp.clip(W, min=LAMBDA_FLOOR**2)))


def _iteration(
    xp: ModuleType,
    data: _Data,
    state: _State,
    boxes: _Boxes,
    bounds: _Bounds | None,
    params: ESPAParams,
) -> tuple[_State, _Boxes, _Bounds | None, float]:
    """One eSPA+ iteration (assign, W, S, Lambda) and the loss of the state it returns."""
    track = boxes.moved < TRACK_BELOW * data.X.shape[0]  # bounds pay once few samples move
    boxes, _, bounds = _sweep(xp, data, state, boxes, params.eps_C, bounds, track=track)
    old, boxes = _prune(xp, state, boxes)
    if bounds is not None:  # bounds hold for the kept boxes of the state they were made for
        bounds = replace(bounds, state=old)
    D, M, N = data.n_features, data.n_classes, data.total
    # Centred coordinates keep b accurate when the data are not centred.
    S_old = old.S - data.mean[:, None]
    X_c = boxes.Xsum - boxes.n[:, None] * data.mean[None, :]  # (K, D)
    b = data.sumsq - 2.0 * xp.sum(S_old.T * X_c, axis=0) + boxes.n @ (S_old.T**2)
    z = -b / (N * params.eps_W)
    W = xp.exp(z - xp.max(z))
    W = W / xp.sum(W)
    S_c = X_c / boxes.n[:, None]  # (K, D) centred box means
    Lam = (boxes.counts / boxes.n[:, None]).T
    fit = xp.sum(W * (data.sumsq - boxes.n @ S_c**2)) / (N * D)
    label = -xp.sum(boxes.counts * xp.log(xp.clip(Lam.T, min=LAMBDA_FLOOR))) / (N * M)
    loss = fit + params.eps_W / D * _entropy_term(xp, W) + params.eps_C * label
    return _State(S=S_c.T + data.mean[:, None], W=W, Lam=Lam), boxes, bounds, float(loss)


def _loss_slack(xp: ModuleType, data: _Data, state: _State, params: ESPAParams) -> float:
    """Bound how much one iteration from ``state`` can raise the loss by rounding alone.

    The boxes minimise costs from a rounded product (a sample may take a box dearer by twice
    the rounding bound, in float32 noticeably), and the loss is computed from sums that cancel,
    which matters when it is close to zero (boxes of one sample, W on one feature).
    """
    D = data.n_features
    moment2 = data.sumsq + data.total * data.mean**2
    row = xp.sum(state.W * moment2) / (data.total * D)  # weighted mean of (1/D) sum_d W_d x_d^2
    label = _label_costs(xp, state.Lam, params.eps_C)
    scale = row + xp.max(label) + params.eps_W * math.log(D) / D
    return float(2 * _rounding(xp, data, state, label, row) + 1e-12 * scale)


def _descend(xp: ModuleType, data: _Data, state: _State, params: ESPAParams) -> _Run:
    """Iterate from ``state`` until the loss stops decreasing by more than tol * |loss|."""
    losses: list[float] = []
    boxes, bounds = _Boxes.empty(xp, data, state.S.shape[1]), None
    for _ in range(params.max_iter):
        slack = _loss_slack(xp, data, state, params)
        state, boxes, bounds, loss = _iteration(xp, data, state, boxes, bounds, params)
        if losses and loss > losses[-1] + 1e-10 * abs(losses[-1]) + slack:
            warnings.warn(
                f"eSPA loss increased from {losses[-1]!r} to {loss!r}: the data are probably "
                "badly scaled (standardise them, e.g. StandardScaler in a Pipeline)",
                RuntimeWarning,
                stacklevel=4,
            )
        losses.append(loss)
        if len(losses) > 1 and losses[-2] - loss <= params.tol * abs(loss):
            return _Run(state=state, losses=losses, converged=True)
    return _Run(state=state, losses=losses, converged=False)


def _moments(xp: ModuleType, X: Any, w: Any, chunk: int) -> tuple[Any, Any, Any, Any]:
    """Compute the weighted mean (D,) and centred sums of squares (D,) of X, and bounds.

    In float64, chunk by chunk. The bounds are per feature, on (x_d - c_d)^2 for c_d between
    the smallest and largest x_d (any box mean) and on x_d^2 over the samples. They carry a
    margin of 1e-6 of the largest magnitude: box means come from sums updated in place, which
    round.
    """
    parts = _chunks(X.shape[0], chunk)
    total = xp.sum(w)
    mean = sum(w[rows] @ xp.astype(X[rows, :], xp.float64, copy=False) for rows in parts) / total
    sumsq = sum(w[rows] @ (xp.astype(X[rows, :], xp.float64) - mean) ** 2 for rows in parts)
    top = xp.max(xp.stack([xp.max(X[rows, :], axis=0) for rows in parts]), axis=0)
    bottom = xp.min(xp.stack([xp.min(X[rows, :], axis=0) for rows in parts]), axis=0)
    top, bottom = xp.astype(top, xp.float64), xp.astype(bottom, xp.float64)
    largest = xp.maximum(xp.abs(top), xp.abs(bottom))
    margin = 1e-6 * largest
    return mean, sumsq, (top - bottom + margin) ** 2, (largest + margin) ** 2


def _initial_state(
    xp: ModuleType, data: _Data, priors: Any, K: int, seed: np.random.SeedSequence
) -> _State:
    """K distinct random samples as centres, uniform W, class priors in every box (espa.md 3)."""
    pick = np.sort(np.random.default_rng(seed).choice(data.X.shape[0], size=K, replace=False))
    index = xp.asarray(pick, device=array_api_compat.device(data.X))
    D = data.n_features
    S = xp.astype(xp.take(data.X, index, axis=0)[:, :D], xp.float64).T
    W = xp.full(D, 1.0 / D, dtype=xp.float64, device=array_api_compat.device(S))
    Lam = xp.broadcast_to(priors[:, None], (priors.shape[0], K))
    return _State(S=S, W=W, Lam=xp.asarray(Lam, copy=True))


class ESPAClassifier(ClassifierMixin, BaseEstimator):
    """eSPA+ classifier: K boxes, an entropic feature weighting W and P(class | box).

    Fits with exact block minimisation (the loss never increases), ``n_init`` restarts keeping the
    lowest training loss, then unbiases Lambda. Standardise the features first (``StandardScaler``
    in a ``Pipeline``): eps_W is in units of within-box variance.

    Parameters
    ----------
    n_clusters : int
        K, the number of boxes; empty boxes are dropped, ``K_`` is what is left.
    eps_C : float
        Weight of the label term (reference normalisation): larger makes boxes label-purer.
    eps_W : float
        Weight of W's entropy: small selects few features, large gives a uniform W.
    max_iter, tol : int, float
        Stop a restart after ``max_iter`` iterations or when the loss decreases by at most
        ``tol * |loss|``.
    n_init : int
        Independent restarts, seeded from ``random_state``; the lowest training loss is kept.
    random_state : int, RandomState or None
        Seed of the restarts (initial centres); a fixed seed gives identical fits.
    class_weight : dict, "balanced" or None
        Multiplies the sample weights per class (for imbalanced labels).
    readout : "hard" or "soft"
        "hard": P(y | x) is the Lambda column of the nearest box (the canonical eSPA read-out).
        "soft": boxes weighted by softmax(-distance / tau), tau the mean training distance to the
        assigned centre (smoother probabilities, higher AUC).
    backend : "numpy", "torch", "cupy" or "array_api_strict"
        Array library that runs the math; torch and cupy come with the ``gpu`` extra.
    device : str or None
        Device for the backend (e.g. "cuda"); None is the backend's default.
    dtype : "float64" or "float32"
        Dtype of the distance matmuls; sums and the model stay float64.
    chunk_size : int or None
        Samples per chunk of each pass (memory O(chunk_size * K)); None picks about
        2**21 / max(K, D) samples. Results do not depend on it beyond rounding.
    warm_start : bool
        Continue from the previous fit's state (one run, ``n_init`` ignored).
    """

    classes_: np.ndarray  # set by fit

    def __init__(
        self,
        n_clusters: int = 20,
        *,
        eps_C: float = 0.1,
        eps_W: float = 1.0,
        max_iter: int = 300,
        tol: float = 1e-8,
        n_init: int = 10,
        random_state: int | np.random.RandomState | None = None,
        class_weight: dict | str | None = None,
        readout: str = "hard",
        backend: str = "numpy",
        device: Any = None,
        dtype: str = "float64",
        chunk_size: int | None = None,
        warm_start: bool = False,
    ) -> None:
        self.n_clusters = n_clusters
        self.eps_C = eps_C
        self.eps_W = eps_W
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.random_state = random_state
        self.class_weight = class_weight
        self.readout = readout
        self.backend = backend
        self.device = device
        self.dtype = dtype
        self.chunk_size = chunk_size
        self.warm_start = warm_start

    def _params(self) -> ESPAParams:
        names = ESPAParams.model_fields
        return ESPAParams(**{k: v for k, v in self.get_params().items() if k in names})

    def _to_backend(self, xp: ModuleType, x: np.ndarray, dtype: Any) -> Any:
        return xp.asarray(x, dtype=dtype, device=self.device)

    def _chunk(self, params: ESPAParams, K: int, D: int) -> int:
        return params.chunk_size or max(1, AUTO_CHUNK_ELEMENTS // max(K, D))

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> ESPAClassifier:
        """Fit boxes, feature weights and class probabilities to (X, y).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Training features (standardise them: the loss assumes comparable scales).
        y : array-like of shape (n_samples,)
            Class labels.
        sample_weight : array-like of shape (n_samples,), optional
            Per-sample weights (times ``class_weight``); zero-weight samples are left out.

        Returns
        -------
        ESPAClassifier
            The fitted estimator.
        """
        params = self._params()
        warm = self.warm_start and hasattr(self, "_train_state")
        X, y = validate_data(self, X, y, dtype=(np.float64, np.float32), reset=not warm)
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if warm and not np.array_equal(classes, self.classes_):
            raise ValueError(
                f"warm_start=True needs the classes of the previous fit {self.classes_.tolist()}, "
                f"got {classes.tolist()}; fit with warm_start=False to start over"
            )
        self.classes_ = classes
        weights = self._sample_weights(sample_weight, y, y_index)
        priors = np.bincount(y_index, weights=weights, minlength=len(classes)) / weights.sum()
        if np.any(weights == 0):  # zero-weight samples change no sum: leave them out
            rows = np.flatnonzero(weights)
            X, y_index, weights = X[rows], y_index[rows], weights[rows]

        xp = array_backend(params.backend)
        K = min(params.n_clusters, len(X))
        chunk = self._chunk(params, K, X.shape[1])
        # one copy of X, with the one-hot labels appended (see _sweep)
        labelled = np.concatenate([X, np.arange(len(classes)) == y_index[:, None]], axis=1)
        Xb = self._to_backend(xp, labelled, getattr(xp, params.dtype))
        w = self._to_backend(xp, weights, xp.float64)
        mean, sumsq, reach, peak = _moments(xp, Xb[:, : X.shape[1]], w, chunk)
        data = _Data(
            X=Xb,
            y=self._to_backend(xp, y_index, xp.int64),
            w=w,
            mean=mean,
            sumsq=sumsq,
            reach=reach,
            peak=peak,
            total=float(weights.sum()),
            n_features=X.shape[1],
            n_classes=len(classes),
            chunk=chunk,
        )
        if warm:
            runs = [_descend(xp, data, self._backend_state(xp, *self._train_state), params)]
        else:
            priors_b = self._to_backend(xp, priors, xp.float64)
            seeds = np.random.SeedSequence(
                check_random_state(self.random_state).randint(np.iinfo(np.int32).max)
            ).spawn(params.n_init)
            runs = [
                _descend(xp, data, _initial_state(xp, data, priors_b, K, seed), params)
                for seed in seeds
            ]
        best = min(range(len(runs)), key=lambda i: runs[i].losses[-1])
        if not runs[best].converged:
            warnings.warn(
                f"eSPA did not converge in max_iter={params.max_iter} iterations "
                f"(last loss decrease {np.diff(runs[best].losses[-2:])}); raise max_iter or tol",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._unbias(xp, data, runs[best].state)
        self.loss_histories_ = [run.losses for run in runs]
        self.loss_history_ = runs[best].losses
        self.n_iter_ = len(runs[best].losses)
        self.best_restart_ = best
        return self

    def _sample_weights(self, sample_weight: Any, y: np.ndarray, y_index: np.ndarray) -> np.ndarray:
        """Sample weights times class weights, checked: finite, non-negative, positive sum."""
        n = len(y)
        if sample_weight is None:
            weights = np.ones(n)
        else:
            weights = np.asarray(sample_weight, dtype=np.float64)
            if weights.ndim == 0:
                weights = np.full(n, float(weights))
            if weights.shape != (n,):
                raise ValueError(
                    f"sample_weight has shape {weights.shape}, expected ({n},): "
                    "one weight per sample"
                )
        if self.class_weight is not None:
            per_class = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
            weights = weights * per_class[y_index]
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError(
                "sample_weight (times class_weight) must be finite and non-negative; "
                f"got values from {weights.min():.3g} to {weights.max():.3g}"
            )
        if not np.any(weights > 0):
            raise ValueError(
                "sample_weight (times class_weight) is zero for every sample: "
                "give some samples a positive weight"
            )
        return weights

    def _backend_state(self, xp: ModuleType, S: np.ndarray, W: np.ndarray, Lam: np.ndarray):
        return _State(*(self._to_backend(xp, a, xp.float64) for a in (S, W, Lam)))

    def _unbias(self, xp: ModuleType, data: _Data, state: _State) -> None:
        """Store the fit, with Lambda recomputed from label-free assignments (espa.md 3)."""
        self._train_state = tuple(to_host(a) for a in (state.S, state.W, state.Lam))
        boxes, cost, _ = _sweep(xp, data, state, _Boxes.empty(xp, data, state.S.shape[1]), 0.0)
        state, boxes = _prune(xp, state, boxes)
        # Mean training distance to the assigned centre: the min cost plus the dropped
        # per-row constant (1/D) sum_d W_d x_d^2, summed through the weighted moments.
        moment2 = data.sumsq + data.total * data.mean**2
        distance = (cost + xp.sum(state.W * moment2) / data.n_features) / data.total
        self.S_ = to_host(state.S)
        self.W_ = to_host(state.W)
        self.Lambda_ = to_host((boxes.counts / boxes.n[:, None]).T)
        self.K_ = self.S_.shape[1]
        self.tau_ = max(float(distance), np.finfo(np.float64).tiny)

    @property
    def feature_importances_(self) -> np.ndarray:
        """W, the entropic feature weights (sum to 1)."""
        check_is_fitted(self)
        return self.W_

    def predict_proba(self, X: Any) -> np.ndarray:
        """Return P(class | x), columns in ``classes_`` order (hard or soft read-out).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features.

        Returns
        -------
        numpy.ndarray of shape (n_samples, n_classes)
            Class probabilities.
        """
        check_is_fitted(self)
        params = self._params()
        X = validate_data(self, X, dtype=(np.float64, np.float32), reset=False)
        xp = array_backend(params.backend)
        state = self._backend_state(xp, self.S_, self.W_, self.Lambda_)
        Xb = self._to_backend(xp, X, getattr(xp, params.dtype))
        metric = _Metric.of(xp, state, Xb.dtype)
        parts = []
        for rows in _chunks(X.shape[0], self._chunk(params, self.K_, X.shape[1])):
            cost = _box_costs(xp, Xb[rows, :], metric)
            if params.readout == "hard":
                parts.append(xp.take(state.Lam.T, xp.argmin(cost, axis=1), axis=0))
            else:
                r = xp.exp(-(cost - xp.min(cost, axis=1)[:, None]) / self.tau_)
                parts.append((r / xp.sum(r, axis=1)[:, None]) @ state.Lam.T)
        return to_host(xp.concat(parts, axis=0))

    def predict(self, X: Any) -> np.ndarray:
        """Predict the most probable class (the first one on ties).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Features.

        Returns
        -------
        numpy.ndarray of shape (n_samples,)
            Class labels from ``classes_``.
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    @property
    def effective_dimension_(self) -> float:
        """exp(H(W)): about how many features W spreads over."""
        check_is_fitted(self)
        W = self.W_[self.W_ > 0]
        return float(math.exp(-np.sum(W * np.log(W))))
