"""eSPA fit and predict: ESPAClassifier vs a plain numpy eSPA and the usual classifiers.

Data: ``make_classification`` with D = 100 features (10 informative, 10 redundant), two classes,
standardised; T training samples and 10,000 test samples. eSPA runs one restart (n_init=1) to
convergence (tol 1e-8) with eps_C = 1e-3 and eps_W = 0.1 (espa.md section 6), in float64 and with
float32 distance products, and in float64 with the bounds that skip settled samples turned off
(every sweep computes every cost: what the bounds save). The plain numpy eSPA is the
straightforward implementation of espa.md section 6 (full distance matrix, ``np.add.at`` box sums,
residuals for W), timed over its first ``--baseline-iters`` iterations: its column "s / it" is what
to compare. RandomForestClassifier (100 trees), LogisticRegression and xgboost (hist, 200 rounds)
run on ``--threads`` threads, as do BLAS and OpenMP (threadpoolctl): on a machine shared with other
jobs, one thread per method avoids spin-waiting threads (xgboost took 9x the CPU time with 2
threads there).

For the sizes in ``--sixth`` (default 10,000) eSPA also runs at K = T // 6, about six samples
per box, the regime of the best candidate of the wider search in configs/espa-binary.toml (K 287
on 1,761 cells): there most boxes lose and gain samples every sweep, and the bounds (forced to
carry every centre move) may cost more than they save; the rows with bounds on and off measure it.

Run: ``.venv/bin/python benchmarks/espa.py [--sizes 10000 100000] [--clusters 50 100 200]
[--sixth 10000]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits
from xgboost import XGBClassifier

from entropice_core.ml import espa
from entropice_core.ml.espa import ESPAClassifier

D = 100
TEST = 10_000
EPS_C, EPS_W = 1e-3, 0.1


def dataset(n_train: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_train + TEST, n_features=D, n_informative=10, n_redundant=10, random_state=0
    )
    mean, std = X[:n_train].mean(axis=0), X[:n_train].std(axis=0)
    X = (X - mean) / std
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def numpy_espa(X: np.ndarray, y: np.ndarray, K: int, iterations: int) -> int:
    """espa.md section 3 as one would first write it in numpy; returns the iterations run."""
    T, D = X.shape
    M = int(y.max()) + 1
    rng = np.random.default_rng(0)
    S = X[rng.choice(T, K, replace=False)].T.copy()
    W = np.full(D, 1.0 / D)
    Lam = np.tile((np.bincount(y, minlength=M) / T)[:, None], (1, K))
    squares = X**2
    for _ in range(iterations):
        distance = (squares @ W)[:, None] - 2 * X @ (W[:, None] * S) + (W @ S**2)[None, :]
        cost = distance / D - EPS_C / M * np.log(np.maximum(Lam, 1e-12))[y]
        box = cost.argmin(axis=1)
        used, box = np.unique(box, return_inverse=True)  # drop empty boxes
        S, K = S[:, used], len(used)
        b = ((X - S[:, box].T) ** 2).sum(axis=0)
        z = -b / (T * EPS_W)
        W = np.exp(z - z.max())
        W /= W.sum()
        sums = np.zeros((K, D))
        np.add.at(sums, box, X)
        size = np.bincount(box, minlength=K)
        S = (sums / size[:, None]).T
        counts = np.zeros((M, K))
        np.add.at(counts, (y, box), 1.0)
        Lam = counts / size
    return iterations


def timed(fn: Callable[..., object], *args: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def cpu_timed(fn: Callable[..., object], *args: object) -> tuple[float, float]:
    """Wall and CPU seconds (all threads): on a shared machine the CPU time is the steadier."""
    cpu = time.process_time()
    wall, _ = timed(fn, *args)
    return wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--clusters", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument(
        "--sixth", type=int, nargs="*", default=[10_000], help="sizes that also run K = T // 6"
    )
    parser.add_argument("--baseline-iters", type=int, default=10)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with threadpool_limits(args.threads):
        run(args)


def run(args: argparse.Namespace) -> None:
    espa_track = espa.TRACK_BELOW
    console = Console(width=180)
    table = Table(
        title=f"Fit and predict, D={D}, two classes, {TEST:,} test rows, "
        f"{args.threads} thread(s) per method (CPU)"
    )
    for column in (
        "T",
        "K",
        "method",
        "iterations",
        "fit s",
        "fit cpu s",
        "s / it",
        "samples x it / s",
        "numpy eSPA s/it / it",
        "predict s",
        "accuracy",
    ):
        table.add_column(column, justify="right")
    for n_train in args.sizes:
        X, y, X_test, y_test = dataset(n_train)
        for K in args.clusters + ([n_train // 6] if n_train in args.sixth else []):
            base, base_cpu = cpu_timed(numpy_espa, X, y, K, args.baseline_iters)
            per_iter_base = base / args.baseline_iters
            for dtype, bounds in (("float64", True), ("float32", True), ("float64", False)):
                model = ESPAClassifier(
                    K, eps_C=EPS_C, eps_W=EPS_W, n_init=1, random_state=0, dtype=dtype
                )
                # TRACK_BELOW = 0 never keeps bounds: every sweep computes every cost.
                espa.TRACK_BELOW = espa_track if bounds else 0.0
                fit, fit_cpu = cpu_timed(model.fit, X, y)
                espa.TRACK_BELOW = espa_track
                predict, pred = timed(model.predict, X_test)
                per_iter = fit / model.n_iter_
                table.add_row(
                    f"{n_train:,}",
                    f"{K} ({model.K_} kept)",
                    f"ESPAClassifier {dtype}" + ("" if bounds else ", bounds off"),
                    str(model.n_iter_),
                    f"{fit:.2f}",
                    f"{fit_cpu:.2f}",
                    f"{per_iter:.4f}",
                    f"{n_train * model.n_iter_ / fit:,.0f}",
                    f"{per_iter_base / per_iter:.1f}x",
                    f"{predict:.3f}",
                    f"{np.mean(pred == y_test):.3f}",
                )
            table.add_row(
                f"{n_train:,}",
                str(K),
                "plain numpy eSPA (espa.md 6)",
                f"{args.baseline_iters} (capped)",
                f"{base:.2f}",
                f"{base_cpu:.2f}",
                f"{per_iter_base:.4f}",
                f"{n_train * args.baseline_iters / base:,.0f}",
                "1.0x",
                "",
                "",
            )
        others = {
            f"RandomForest ({args.trees} trees)": RandomForestClassifier(
                args.trees, n_jobs=args.threads, random_state=0
            ),
            "LogisticRegression": LogisticRegression(max_iter=1000),
            "xgboost (hist, 200 rounds)": XGBClassifier(
                n_estimators=200, tree_method="hist", n_jobs=args.threads, random_state=0
            ),
        }
        for name, model in others.items():
            fit, fit_cpu = cpu_timed(model.fit, X, y)
            predict, pred = timed(model.predict, X_test)
            table.add_row(
                f"{n_train:,}",
                "",
                name,
                "",
                f"{fit:.2f}",
                f"{fit_cpu:.2f}",
                "",
                "",
                "",
                f"{predict:.3f}",
                f"{np.mean(pred == y_test):.3f}",
            )
        table.add_section()
    console.print(table)


if __name__ == "__main__":
    main()
