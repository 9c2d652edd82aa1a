"""Training data and inference: Entropice vs what a user would write with pandas / in memory.

Synthetic L2 datasets on the real h3_7 cells of a 1,000 x 900 km box of the western Canadian
Arctic (about 180,000 cells): a terrain-like source (8 statistics plus 2 quartiles) and a
climate-like one (6 variables x 6 years), 46 feature columns in all.

1. Join: ``DatasetEnsemble`` flattening and joining the sources vs ``to_dataframe`` + unstack +
   ``join`` in pandas (same columns, checked equal); the blocked split with its buffer is
   timed on its own (pandas has no counterpart).
2. Inference with a 100-tree XGBoost model: ``predict_cells`` reading the features from Zarr in
   batches vs loading the whole feature matrix and calling ``predict_proba`` once (same
   probabilities, checked); peak traced memory of each.

Run: ``.venv/bin/python benchmarks/training.py [--level 7]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import xarray as xr
from rich.console import Console
from rich.table import Table
from xgboost import XGBClassifier

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.io.zarr import read_dataset, write_dataset
from entropice_core.ml.dataset import DatasetEnsemble, SourceSpec, _source_columns
from entropice_core.ml.inference import predict_cells
from entropice_core.spatial.grids import cell_ids

BBOX = (-140.0, 64.0, -115.0, 72.0)
YEARS = list(range(2018, 2024))


def sources(spec: GridSpec, seed: int = 0) -> tuple[xr.Dataset, dict[str, xr.Dataset]]:
    ids = np.sort(cell_ids(spec, AreaOfInterest.from_bbox(BBOX)))
    rng = np.random.default_rng(seed)
    coords = {"cell_ids": ("cell_ids", ids, spec.xdggs_attrs)}
    terrain = xr.Dataset(
        {f"elevation_{s}": ("cell_ids", rng.normal(size=ids.size)) for s in "abcdefgh"}
        | {"elevation_quantile": (("cell_ids", "quantile"), rng.normal(size=(ids.size, 2)))},
        coords=coords | {"quantile": [0.25, 0.75]},
    )
    climate = xr.Dataset(
        {f"climate_{v}": (("cell_ids", "year"), rng.normal(size=(ids.size, 6))) for v in "uvwxyz"},
        coords=coords | {"year": YEARS},
    )
    count = rng.poisson(np.exp(terrain["elevation_a"].to_numpy() - 1))
    labels = xr.Dataset(
        {"rts_count_all_years": ("cell_ids", count), "rts_density_all_years": ("cell_ids", count)},
        coords=coords,
    )
    return labels, {"terrain_features": terrain, "climate_features": climate}


def pandas_join(l2: dict[str, xr.Dataset]) -> pd.DataFrame:
    """What a user would write: each variable as a table, extra dims unstacked to columns,
    sources joined on the cells."""
    frames = []
    for dataset in l2.values():
        columns = []
        for name in sorted(dataset.data_vars):
            series = dataset[name].to_series()
            if dataset[name].ndim == 1:
                columns.append(series.rename(name))
                continue
            wide = series.unstack([d for d in dataset[name].dims if d != "cell_ids"])
            wide.columns = [f"{name}_{c:g}" for c in wide.columns]
            columns.append(wide)
        frames.append(pd.concat(columns, axis=1))
    return frames[0].join(frames[1:], how="inner")


def timed(function, *args, **kwargs):
    """Value, seconds and peak traced MiB: timed untraced (tracemalloc slows Python code),
    then run again under tracemalloc for the peak."""
    start = time.perf_counter()
    value = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    tracemalloc.start()
    function(*args, **kwargs)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return value, seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--level", type=int, default=7, help="H3 resolution of the cells")
    args = parser.parse_args()
    spec = GridSpec(grid="h3", level=args.level)
    labels, l2 = sources(spec)
    ids = labels["cell_ids"].to_numpy()
    ensemble = DatasetEnsemble(
        sources=[SourceSpec(asset=name, path="-") for name in l2],
    )
    table = Table(
        title=f"Training data and inference, {ids.size:,} {spec.key} cells (2 cores, shared)"
    )
    for column in (
        "step",
        "what a user writes",
        "s",
        "entropice",
        "s",
        "speed-up",
        "peak MiB (user / ours)",
    ):
        table.add_column(column, justify="right")

    reference, pandas_s, pandas_mib = timed(pandas_join, l2)

    def ours_join():
        return pd.concat(
            [_source_columns(s, l2[s.asset], ids)[0] for s in ensemble.sources], axis=1
        )

    joined, ours_s, ours_mib = timed(ours_join)
    pd.testing.assert_frame_equal(
        joined[reference.columns].reset_index(drop=True), reference.reset_index(drop=True)
    )
    table.add_row(
        "join 2 sources",
        "to_dataframe+unstack+join",
        f"{pandas_s:.2f}",
        "DatasetEnsemble",
        f"{ours_s:.2f}",
        f"{pandas_s / ours_s:.1f}x",
        f"{pandas_mib:.0f} / {ours_mib:.0f}",
    )
    data, build_s, build_mib = timed(ensemble.build, labels, l2)
    table.add_row(
        "join + blocked split + buffer",
        "-",
        "-",
        "DatasetEnsemble.build",
        f"{build_s:.2f}",
        "-",
        f"- / {build_mib:.0f}",
    )

    X, y = data.X("train"), data.dataset["rts_count"].to_numpy()[data.mask("train")] > 0
    model = XGBClassifier(n_estimators=100, max_depth=4, n_jobs=2).fit(X, y)
    cells = gpd.GeoDataFrame({"cell_id": ids}, geometry=[shapely.Point(0, 0)] * ids.size, crs=4326)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dataset.zarr"
        write_dataset(data.dataset.chunk({"cell_ids": 65_536}), path)

        def in_memory():
            stored = read_dataset(path)
            features = pd.DataFrame(stored["features"].to_numpy(), columns=data.feature_names)
            proba = model.predict_proba(features)
            return cells.assign(proba_rts=proba[:, 1])

        def batched():
            return predict_cells(
                model,
                read_dataset(path),
                cells,
                ["no_rts", "rts"],
                data.feature_names,
                batch_size=65_536,
            )

        whole, whole_s, whole_mib = timed(in_memory)
        ours, batch_s, batch_mib = timed(batched)
    usable = ~data.mask("excluded")
    np.testing.assert_allclose(
        ours["proba_rts"].to_numpy()[usable], whole["proba_rts"].to_numpy()[usable], rtol=1e-6
    )
    table.add_row(
        "predict every cell",
        "load all + predict_proba",
        f"{whole_s:.2f}",
        "predict_cells (65,536/batch)",
        f"{batch_s:.2f}",
        f"{whole_s / batch_s:.1f}x",
        f"{whole_mib:.0f} / {batch_mib:.0f}",
    )
    Console().print(table)
    Console().print(
        f"{ids.size / batch_s:,.0f} cells/s predicted in batches; the batched peak stays at one "
        "batch of features as the cell count grows, the in-memory one grows with it."
    )


if __name__ == "__main__":
    main()
