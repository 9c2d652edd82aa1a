"""Metadata every materialisation shows in the UI."""

import base64
from typing import Any

import dagster as dg

#: Who answers for every asset (a Dagster owner: a team or an e-mail), filterable in the UI.
OWNERS = ["team:entropice"]


#: What the columns of the stored tables mean, for the column schemas the UI shows. Prefixes
#: (ending in "_") describe families of columns: one per class, metric or statistic.
COLUMN_DESCRIPTIONS = {
    "cell_id": "Grid cell id (uint64): H3 index (hex in the UI) or HEALPix nested index",
    "geometry": "Geometry, EPSG:4326 (cells split at 180 degrees)",
    "land_area_km2": "Land area of the cell on the WGS84 ellipsoid, km²",
    "land_fraction": "Land share of the cell's area (water mask), 0-1",
    "year": "Year of the observation (DARTS: the imagery year)",
    "area_m2": "Footprint area on the WGS84 ellipsoid, m²",
    "source": "File or tile the row was read from",
    "tile": "Water-mask tile name",
    "west": "Tile's west edge, degrees",
    "south": "Tile's south edge, degrees",
    "east": "Tile's east edge, degrees",
    "north": "Tile's north edge, degrees",
    "role": "Cell's role in the split: train, test, buffer or unlabelled",
    "predicted_class": "Predicted class index (the model's classes); empty without features",
    "predicted_label": "Predicted class name",
    "proba_": "Predicted probability of this class",
    "grid_level": "Grid and level, e.g. h3_6",
    "experiment": "Experiment (configs/<model>-<task>[-<dataset>].toml)",
    "model": "Model family: espa, xgboost, rf or knn",
    "task": "Target: binary (RTS or not), count or density classes",
    "dataset": "Dataset variant: the sources the model saw",
    "cv_": "Score in spatial cross-validation (mean over folds)",
    "test_": "Score on the held-out test blocks",
    "baseline_": "Score of the majority-class baseline",
    "time": "static (one row per cell) or yearly (per cell and year) features",
    "classes": "The class names, in the order of the class indices",
    "train_rows": "Training rows (cells, or cell-years)",
    "test_rows": "Test rows",
    "features": "Number of features",
    "search_candidates": "Hyperparameter candidates tried",
    "search_seconds": "Wall time of the search, s",
    "refit_seconds": "Wall time of the final fit, s",
    "best_params": "Hyperparameters the search chose (JSON)",
    "data_versions": "Content versions of the inputs the model was trained on (JSON)",
    "trained_at": "When the model was trained (UTC)",
}


def column_description(name: str) -> str:
    """The description of a stored column (see COLUMN_DESCRIPTIONS); empty if unknown."""
    if name in COLUMN_DESCRIPTIONS:
        return COLUMN_DESCRIPTIONS[name]
    if name.startswith("cv_") and name.endswith("_std"):
        return "Standard deviation of the score over the spatial CV folds"
    prefixes = [p for p in COLUMN_DESCRIPTIONS if p.endswith("_") and name.startswith(p)]
    return COLUMN_DESCRIPTIONS[max(prefixes, key=len)] if prefixes else ""


def readable_cell_ids(frame: Any) -> Any:
    """The frame with its ``cell_id`` column or index as the grid writes them: H3 cells as
    hex strings (``86...ffff``), HEALPix cells as integers (a markdown table would otherwise
    print 64-bit ids as floats, ``5.94709e+17``)."""
    from h3.api import basic_int as h3

    def readable(ids: Any) -> list[str]:
        values = [int(i) for i in ids]
        if values and all(h3.is_valid_cell(v) for v in values):
            return [h3.int_to_str(v) for v in values]
        return [str(v) for v in values]

    frame = frame.copy()
    if "cell_id" in frame.columns:
        frame["cell_id"] = readable(frame["cell_id"])
    if frame.index.name in ("cell_id", "cell_ids"):
        frame.index = type(frame.index)(readable(frame.index), name=frame.index.name)
    return frame


def frame_summary(frame: Any, map_of: str | None = None) -> dict[str, object]:
    """Bounding box and the first rows of a GeoDataFrame; with ``map_of``, a map of that
    column on the frame's own geometries (one row per cell: the first of each cell id)."""
    head = readable_cell_ids(frame.head(10).drop(columns="geometry"))
    summary: dict[str, object] = {
        "bbox": [round(float(v), 4) for v in frame.total_bounds],
        "preview": dg.MetadataValue.md(head.to_markdown()),
    }
    if map_of is not None:
        from entropice_core.plots import cell_values_png

        cells = frame.drop_duplicates("cell_id")
        summary["map"] = png_markdown(cell_values_png(cells, cells[map_of], map_of), map_of)
    return summary


def png_markdown(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG inline in markdown metadata (the UI shows it; nothing is written to disk)."""
    encoded = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def markdown_table(frame: Any, digits: int = 4) -> dg.MetadataValue:
    """A pandas frame as a markdown table, rounded (cell ids as the grid writes them)."""
    return dg.MetadataValue.md(readable_cell_ids(frame.round(digits)).to_markdown())


def cell_map(cells: Any, values: Any, title: str) -> dg.MetadataValue:
    """A small map of one per-cell variable (an xarray DataArray over ``cell_ids``, or a
    Series indexed by cell id), drawn on ``cells`` in their order; cells without a value are
    left blank."""
    import numpy as np
    import pandas as pd

    from entropice_core.plots import cell_values_png

    if not isinstance(values, pd.Series):
        values = values.to_series()
    aligned = values[~values.index.duplicated()].reindex(cells["cell_id"].to_numpy())
    return png_markdown(cell_values_png(cells, np.asarray(aligned, float), title), title)


def stored_at(asset: str) -> dict[str, str]:
    """The asset's path template in the storage layout, shown in the UI's definition metadata
    (the IO managers take the path from ``entropice_core.layout`` itself)."""
    from entropice_core.layout import ASSET_PATHS

    return {"entropice/path": ASSET_PATHS[asset]}


def dashboard_url(page: str, partition_key: Any = None) -> dg.MetadataValue:
    """The dashboard page that shows the asset (``make dashboard``), preselecting the
    partition's grid level and experiment through the page's query parameters."""
    from entropice_dashboard import page_url

    keys = getattr(partition_key, "keys_by_dimension", None) or {}
    return dg.MetadataValue.url(page_url(page, **keys))
