"""What the pages read: the storage layout's files, lazily, cached on their modification time.

Every reader takes a path from :class:`entropice_core.layout.Layout`, stats it and calls a
cached function keyed on ``(path, mtime_ns)``: a rewritten file (the IO managers write to a
temporary path and rename) has a new mtime and is read again, an unchanged one comes from the
cache. A missing or unreadable file raises :class:`DataProblem`, which names the file and the
command that makes it; the pages show that message instead of a traceback.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from entropice_core.config import Settings
from entropice_core.io.atomic import resolve_published
from entropice_core.layout import ASSET_PATHS, SOURCES, Layout, template_fields
from entropice_core.ml.training import MODEL_STAMP, SCORES

if TYPE_CHECKING:
    import pandas as pd
    import xarray as xr
    from sklearn.pipeline import Pipeline

#: Files of an experiment folder (docs/training.md, "Outputs").
CV_RESULTS = "cv_results.parquet"
IMPORTANCE = "feature_importance.parquet"


class DataProblem(Exception):
    """A file the page needs is missing or unreadable; the message says which and the fix."""

    def __init__(self, path: Path, problem: str, command: str):
        self.path = Path(path)
        self.problem = problem
        self.command = command
        super().__init__(f"{self.path} {problem}. Make it with: {command}")


def data_dir() -> Path:
    """Return the data directory the dashboard shows (``ENTROPICE_DATA_DIR``, default ./data).

    Returns
    -------
    Path
        Absolute path.
    """
    return Settings.from_env().data_dir


def layout() -> Layout:
    """Return the storage layout of :func:`data_dir`.

    Returns
    -------
    Layout
        The one owner of paths.
    """
    return Layout(data_dir())


def make_command(asset: str, grid_level: str | None = None, experiment: str | None = None) -> str:
    """Return the command that writes ``asset`` (for one partition where it has them).

    Parameters
    ----------
    asset : str
        Asset name of the storage layout.
    grid_level : str, optional
        The grid_level key of a partitioned asset.
    experiment : str, optional
        The experiment key of a model asset.

    Returns
    -------
    str
        A shell command (the entropice CLI where it has one, else Dagster's).
    """
    if asset == "trained_model" and grid_level and experiment:
        return f"entropice train --config configs/{experiment}.toml --grid-level {grid_level}"
    if asset == "predictions" and grid_level and experiment:
        return f"entropice predict --grid-level {grid_level} --experiment {experiment}"
    if asset == "experiment_summary":
        return (
            "dagster asset materialize -m entropice_dagster.definitions --select "
            "experiment_summary (or `make demo` for the sample region)"
        )
    partition = ""
    if experiment and grid_level:
        partition = f" --partition '{experiment}|{grid_level}'"
    elif grid_level:
        partition = f" --partition {grid_level}"
    return (
        f"dagster asset materialize -m entropice_dagster.definitions --select {asset}{partition}"
        " (or `make demo` for the sample region)"
    )


def _mtime(path: Path, asset: str, **keys: str | None) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        raise DataProblem(path, "does not exist", make_command(asset, **keys)) from None


def _corrupt(path: Path, err: Exception, asset: str, **keys: str | None) -> DataProblem:
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    return DataProblem(
        path, f"cannot be read ({first})", f"delete it, then {make_command(asset, **keys)}"
    )


@st.cache_data(show_spinner=False, max_entries=64)
def _read_parquet(path: str, mtime_ns: int, columns: tuple[str, ...] | None) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(path, columns=list(columns) if columns else None)


def read_table(
    path: Path,
    asset: str,
    columns: list[str] | None = None,
    grid_level: str | None = None,
    experiment: str | None = None,
) -> pd.DataFrame:
    """Read a Parquet table (without geometry), cached on its modification time.

    Parameters
    ----------
    path : Path
        The file, from the layout.
    asset : str
        The asset that writes it (for the message when it is missing).
    columns : list of str, optional
        Only these columns (a GeoParquet file is read without its geometry this way).
    grid_level, experiment : str, optional
        The partition, for the message.

    Returns
    -------
    pandas.DataFrame
        The table (the cached object: do not modify it in place).

    Raises
    ------
    DataProblem
        If the file is missing or not readable Parquet.
    """
    keys = {"grid_level": grid_level, "experiment": experiment}
    mtime = _mtime(path, asset, **keys)
    try:
        return _read_parquet(str(path), mtime, tuple(columns) if columns else None)
    except Exception as err:
        raise _corrupt(path, err, asset, **keys) from err


@st.cache_data(show_spinner=False, max_entries=16)
def _parquet_columns(path: str, mtime_ns: int) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


def table_columns(path: Path, asset: str, **keys: str | None) -> list[str]:
    """Return the column names of a Parquet file from its footer.

    Parameters
    ----------
    path : Path
        The file.
    asset : str
        The asset that writes it.
    **keys : str
        ``grid_level`` / ``experiment``, for the message.

    Returns
    -------
    list of str
        Column names.

    Raises
    ------
    DataProblem
        If the file is missing or not Parquet.
    """
    mtime = _mtime(path, asset, **keys)
    try:
        return _parquet_columns(str(path), mtime)
    except Exception as err:
        raise _corrupt(path, err, asset, **keys) from err


@st.cache_resource(show_spinner=False, max_entries=8)
def _open_zarr(path: str, mtime_ns: int) -> xr.Dataset:
    from entropice_core.io.zarr import read_dataset

    return read_dataset(path)


def open_store(path: Path, asset: str, grid_level: str | None = None) -> xr.Dataset:
    """Open a Zarr store lazily (Dask-backed), cached on its modification time.

    Parameters
    ----------
    path : Path
        The store, from the layout.
    asset : str
        The asset that writes it.
    grid_level : str, optional
        Its partition, for the message.

    Returns
    -------
    xarray.Dataset
        The lazy dataset (shared between sessions: do not modify it).

    Raises
    ------
    DataProblem
        If the store is missing or not readable.
    """
    mtime = _mtime(path, asset, grid_level=grid_level)
    try:  # keyed on the version the path shows now (a new write is a new version folder)
        return _open_zarr(str(resolve_published(path)), mtime)
    except Exception as err:
        raise _corrupt(path, err, asset, grid_level=grid_level) from err


@st.cache_data(show_spinner=False, max_entries=64)
def _read_json(path: str, mtime_ns: int) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def model_stamp(lay: Layout, grid_level: str, experiment: str) -> dict[str, Any]:
    """Return an experiment's ``model.json`` (classes, features, best parameters, versions).

    Parameters
    ----------
    lay : Layout
        The storage layout.
    grid_level, experiment : str
        The partition.

    Returns
    -------
    dict
        The stamp.

    Raises
    ------
    DataProblem
        If the stamp is missing (a half-written folder) or not JSON.
    """
    path = lay.experiment(grid_level, experiment) / MODEL_STAMP
    keys = {"grid_level": grid_level, "experiment": experiment}
    mtime = _mtime(path, "trained_model", **keys)
    try:
        return _read_json(str(path), mtime)
    except Exception as err:
        raise _corrupt(path, err, "trained_model", **keys) from err


def experiment_table(lay: Layout, grid_level: str, experiment: str, name: str) -> pd.DataFrame:
    """Return one table of an experiment folder (``scores``, ``cv_results``, importance).

    Parameters
    ----------
    lay : Layout
        The storage layout.
    grid_level, experiment : str
        The partition.
    name : str
        File name in the folder, e.g. :data:`CV_RESULTS`.

    Returns
    -------
    pandas.DataFrame
        The table.

    Raises
    ------
    DataProblem
        If the file is missing or corrupt.
    """
    path = lay.experiment(grid_level, experiment) / name
    return read_table(path, "trained_model", grid_level=grid_level, experiment=experiment)


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_model(folder: str, mtime_ns: int) -> tuple[Pipeline, dict[str, Any]]:
    from entropice_core.ml.training import load_model

    return load_model(folder)


def model(lay: Layout, grid_level: str, experiment: str) -> tuple[Pipeline, dict[str, Any]]:
    """Load an experiment's fitted pipeline with ``entropice_core.ml.training.load_model``.

    Parameters
    ----------
    lay : Layout
        The storage layout.
    grid_level, experiment : str
        The partition.

    Returns
    -------
    tuple of (Pipeline, dict)
        The pipeline and its stamp.

    Raises
    ------
    DataProblem
        If the stamp or model file is missing or unreadable.
    """
    stamp = model_stamp(lay, grid_level, experiment)
    folder = lay.experiment(grid_level, experiment)
    keys = {"grid_level": grid_level, "experiment": experiment}
    model_file = folder / stamp.get("model_file", "model.skops")
    mtime = _mtime(model_file, "trained_model", **keys)
    try:
        return _load_model(str(folder), mtime)
    except Exception as err:
        raise _corrupt(model_file, err, "trained_model", **keys) from err


def leaderboard(lay: Layout) -> pd.DataFrame:
    """Return the leaderboard ``training-results/summary.parquet`` (experiment_summary).

    Parameters
    ----------
    lay : Layout
        The storage layout.

    Returns
    -------
    pandas.DataFrame
        One row per trained (grid level, experiment).

    Raises
    ------
    DataProblem
        If the file is missing or corrupt.
    """
    return read_table(lay.experiment_summary, "experiment_summary")


@dataclass(frozen=True)
class Experiment:
    """One experiment folder and whether its files are complete."""

    grid_level: str
    experiment: str
    folder: Path
    missing: tuple[str, ...]

    @property
    def complete(self) -> bool:
        """All result files are there."""
        return not self.missing


#: Files a finished experiment folder holds (predictions come from a second asset).
EXPERIMENT_FILES = (MODEL_STAMP, SCORES, CV_RESULTS, IMPORTANCE)


def experiments(lay: Layout) -> list[Experiment]:
    """List the experiment folders under ``training-results/`` and what each lacks.

    Parameters
    ----------
    lay : Layout
        The storage layout.

    Returns
    -------
    list of Experiment
        Sorted by grid level and experiment key.
    """
    found = []
    for grid_level, experiment, folder in lay.experiment_folders():
        files = (*EXPERIMENT_FILES, lay.predictions(grid_level, experiment).name)
        missing = tuple(name for name in files if not (folder / name).exists())
        found.append(Experiment(grid_level, experiment, folder, missing))
    return found


def grid_levels_with(lay: Layout, asset: str) -> list[str]:
    """Return the grid levels for which ``asset`` is stored.

    Parameters
    ----------
    lay : Layout
        The storage layout.
    asset : str
        An asset whose path template has ``{grid_level}`` only.

    Returns
    -------
    list of str
        Grid_level keys, sorted.
    """
    template = ASSET_PATHS[asset]
    pattern = template.replace("{grid_level}", "*")
    prefix, suffix = template.split("{grid_level}")
    return sorted(
        str(p.relative_to(lay.root)).removeprefix(prefix).removesuffix(suffix)
        for p in lay.root.glob(pattern)
        if not p.name.startswith(".")
    )


def inventory(lay: Layout) -> pd.DataFrame:
    """Tabulate what the data directory holds: per asset its stored partitions and age.

    Parameters
    ----------
    lay : Layout
        The storage layout.

    Returns
    -------
    pandas.DataFrame
        Columns ``asset``, ``path`` (template), ``stored`` (partitions found, or files for an
        unpartitioned asset), ``partitions`` (their keys) and ``last_written`` (UTC).
    """
    import pandas as pd

    rows = []
    for asset, template in ASSET_PATHS.items():
        fields = template_fields(template)
        pattern = template.format(**{f: "*" for f in fields})
        paths = [p for p in lay.root.glob(pattern) if not p.name.startswith(".")]
        keys = []
        if fields:
            regex = template.replace(".", r"\.")
            for field in fields:
                regex = regex.replace("{" + field + "}", "([^/]+)")
            for p in paths:
                match = re.fullmatch(regex, str(p.relative_to(lay.root)))
                if match:
                    keys.append("|".join(match.groups()))
        newest = max((p.stat().st_mtime for p in paths), default=None)
        rows.append(
            {
                "asset": asset,
                "path": template,
                "stored": len(paths),
                "partitions": ", ".join(sorted(keys)) if fields else "-",
                "last_written": pd.Timestamp(newest, unit="s", tz="UTC").floor("s")
                if newest
                else pd.NaT,
            }
        )
    return pd.DataFrame(rows)


def source_inventory(lay: Layout) -> pd.DataFrame:
    """Tabulate the raw inputs under ``sources/``: files and bytes per source.

    Parameters
    ----------
    lay : Layout
        The storage layout.

    Returns
    -------
    pandas.DataFrame
        Columns ``source``, ``folder``, ``files``, ``MB``.
    """
    import pandas as pd

    rows = []
    for name in SOURCES:
        folder = lay.source(name)
        files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
        size = sum(p.stat().st_size for p in files)
        rows.append(
            {
                "source": name,
                "folder": str(folder.relative_to(lay.root)),
                "files": len(files),
                "MB": round(size / 1e6, 2),
            }
        )
    return pd.DataFrame(rows)
