"""DatasetEnsemble: join per-cell L2 datasets into training data with a spatially blocked split.

Conventions (see docs/training.md)
----------------------------------
- Every cell of the labels (``rts_labels``: every grid cell, zero where no RTS was mapped) is a
  row. Feature sources are reindexed onto those cells; a cell a source lacks is missing there.
- A feature source's variables are flattened to columns: a variable with only ``cell_ids`` keeps
  its name; one with further dims (``year``, ``quantile``, ``season``, ...) gets one column per
  combination of their values, named ``{variable}_{value}[_{value}...]`` in dim order
  (``elevation_quantile_0.25``, ``thawing_degree_days_2020``).
- Missing values are handled per source (``SourceSpec.missing``): ``drop`` excludes the cell,
  ``fill`` writes ``fill_value``, ``keep`` leaves NaN for models that take it (XGBoost),
  ``error`` refuses the data. Excluded cells stay in the dataset with role ``excluded``.
- Spatial blocks are the ancestors of the cells at a coarser ``block_level``. Whole blocks go to
  the test set or to one CV fold, stratified by "any RTS"; training cells within
  ``buffer_cells`` steps of a test cell become ``buffer`` (used nowhere), and within a CV split
  the training cells next to that fold's validation cells are left out the same way.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from entropice_core.config import ArrayBackend, Device, GridSpec, resolve_backend
from entropice_core.layout import Layout

if TYPE_CHECKING:  # imported where used: the configs load without the data stack
    import pandas as pd
    import xarray as xr

Task = Literal["binary", "count", "density"]
MissingPolicy = Literal["drop", "fill", "keep", "error"]

#: Per-cell role in the split (the ``role`` variable; CF flag_values / flag_meanings).
ROLES = {"excluded": -1, "train": 0, "test": 1, "buffer": 2}
#: Class names of the binary task.
BINARY_CLASSES = ("no_rts", "rts")


class SourceSpec(BaseModel):
    """One L2 feature dataset and what to take from it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    asset: str = Field(
        description="Name of the L2 dataset (the Dagster asset), e.g. terrain_features."
    )
    path: str | None = Field(
        default=None,
        description="Store under the data directory, with {grid_level}: a Zarr store, or an "
        "Icechunk repository (*.icechunk) with one group per grid level. Default: the asset's "
        "place in the storage layout (entropice_core.layout); set it only for a dataset the "
        "layout does not know.",
    )
    variables: list[str] | None = Field(
        default=None, description="Variables to use; default every numeric variable."
    )
    statistics: list[str] | None = Field(
        default=None,
        description="Keep only variables named <anything>_<statistic> for these statistics "
        "(e.g. mean, std, quantile); default all.",
    )
    years: list[int] | None = Field(
        default=None, description="Years to keep along a `year` dim; default all."
    )
    years_reduce: Literal["columns", "mean"] = Field(
        default="columns",
        description="'columns': one column per year; 'mean': the mean over the kept years.",
    )
    select: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Values to keep along other dims, e.g. {quantile = [0.25, 0.75]}.",
    )
    missing: MissingPolicy = Field(
        default="drop",
        description="NaN in this source: drop the cell, fill with fill_value, keep NaN for "
        "models that handle it (xgboost), or raise an error.",
    )
    fill_value: float = Field(default=0.0, description="Value written where missing = 'fill'.")
    prefix: str = Field(default="", description="Prefix for the column names of this source.")


class LabelSpec(BaseModel):
    """Where the RTS labels come from and which all-years variables are the targets."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    asset: str = "rts_labels"
    path: str | None = Field(
        default=None, description="Store under the data directory; default: the layout's."
    )
    count: str = Field(default="rts_count_all_years", description="RTS count per cell.")
    density: str = Field(default="rts_density_all_years", description="RTS per 1000 km2 of land.")


class SplitSpec(BaseModel):
    """Spatially blocked test split and CV folds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    block_level: int | None = Field(
        default=None,
        description="Level of the blocks (coarser than the cells); default: the level whose "
        "mean cell area is nearest block_area_km2.",
    )
    block_area_km2: float = Field(default=2000.0, gt=0, description="Wanted block size.")
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5, description="Share of the blocks.")
    n_folds: int = Field(default=4, ge=2, le=16, description="Spatial CV folds of the rest.")
    buffer_cells: int = Field(
        default=1,
        ge=0,
        description="Training cells this many steps from a held-out cell are left out.",
    )
    seed: int = 0

    def level_for(self, spec: GridSpec) -> int:
        """Return the block level for cells of ``spec``.

        Parameters
        ----------
        spec : GridSpec
            Grid and level of the cells.

        Returns
        -------
        int
            ``block_level`` if set, else the coarser level whose mean cell area is nearest
            ``block_area_km2``.

        Raises
        ------
        ValueError
            If ``block_level`` is not coarser than the cells, or the cells have no coarser
            level.
        """
        from entropice_core.spatial.grids import mean_cell_area_km2

        if self.block_level is not None:
            if not 0 <= self.block_level < spec.level:
                raise ValueError(
                    f"block_level {self.block_level} must be coarser than the cells "
                    f"({spec.key}): 0..{spec.level - 1}"
                )
            return self.block_level
        if spec.level == 0:
            raise ValueError(f"{spec.key} cells have no coarser level to block by")
        levels = range(spec.level)
        areas = [mean_cell_area_km2(GridSpec(grid=spec.grid, level=lv)) for lv in levels]
        return int(np.argmin([abs(np.log(a / self.block_area_km2)) for a in areas]))


class Target(BaseModel):
    """The learning task: binary (any RTS) or count/density turned into quantile classes.

    Count and density classes: class 0 is "no RTS"; the cells with RTS are cut into ``n_bins``
    classes at quantiles of the *training* cells' values (so no test value shapes the bins).
    Quantiles are data values; equal edges (ties in small counts) merge bins.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Task = "binary"
    n_bins: int = Field(default=3, ge=1, le=20, description="Classes among cells with RTS.")

    def encode(self, data: TrainingData) -> tuple[np.ndarray, list[str]]:
        """Return class codes 0..n-1 for every cell of ``data`` and the class names.

        Parameters
        ----------
        data : TrainingData
            The built dataset; for count and density, its training cells place the bins.

        Returns
        -------
        codes : numpy.ndarray
            int64 class code of every cell.
        names : list of str
            The class names, in code order.

        Raises
        ------
        ValueError
            If no training cell has RTS (count and density tasks).
        """
        labels = data.dataset
        if self.task == "binary":
            return (labels["rts_count"].to_numpy() > 0).astype(np.int64), list(BINARY_CLASSES)
        value = labels["rts_count" if self.task == "count" else "rts_density"].to_numpy()
        fit = data.mask("train") & (value > 0)
        if not fit.any():
            raise ValueError(
                f"no training cell has RTS, so the {self.task} task has no classes to learn; "
                "choose a larger area or a finer grid level"
            )
        q = np.linspace(0, 1, self.n_bins + 1)[1:-1]
        edges = np.unique(np.quantile(value[fit], q, method="inverted_cdf"))
        edges = edges[edges < value[fit].max()]
        codes = np.where(value > 0, 1 + np.searchsorted(edges, value, side="left"), 0)
        bounds = [0.0, *edges.tolist()]
        names = ["0"] + [f"({lo:g}, {hi:g}]" for lo, hi in zip(bounds, edges, strict=False)]
        names.append(f"> {bounds[-1]:g}")
        return codes.astype(np.int64), names


class DatasetEnsemble(BaseModel):
    """Which L2 datasets make the training data of a grid level, and how it is split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: LabelSpec = LabelSpec()
    sources: list[SourceSpec] = Field(min_length=1)
    split: SplitSpec = SplitSpec()

    @model_validator(mode="after")
    def _unique_assets(self) -> DatasetEnsemble:
        names = [s.asset for s in self.sources]
        if len(set(names)) != len(names) or self.labels.asset in names:
            raise ValueError(f"each source must appear once, got {names} besides the labels")
        return self

    @classmethod
    def from_toml(cls, path: str | Path) -> DatasetEnsemble:
        """Read a dataset config (see configs/dataset.toml).

        Parameters
        ----------
        path : str or Path
            The TOML file.

        Returns
        -------
        DatasetEnsemble
            The validated config.
        """
        return cls.model_validate(_read_toml(path))

    def open(self, data_dir: str | Path, grid_level: str) -> TrainingData:
        """Read the labels and every source of ``grid_level`` under ``data_dir`` and build.

        Parameters
        ----------
        data_dir : str or Path
            Root of the storage layout.
        grid_level : str
            Grid_level key, e.g. ``h3_5``.

        Returns
        -------
        TrainingData
            The built dataset (:meth:`build`), with each input's path and snapshot recorded.
        """
        layout = Layout(Path(data_dir))
        labels, labels_version = open_l2(
            layout.dataset_path(self.labels.asset, grid_level, self.labels.path), grid_level
        )
        sources, versions = {}, {self.labels.asset: labels_version}
        for source in self.sources:
            sources[source.asset], versions[source.asset] = open_l2(
                layout.dataset_path(source.asset, grid_level, source.path), grid_level
            )
        return self.build(labels, sources, versions)

    def assets(self) -> list[str]:
        """Return the asset names this ensemble reads.

        Returns
        -------
        list of str
            The labels first, then every source.
        """
        return [self.labels.asset, *(source.asset for source in self.sources)]

    def build_from(self, inputs: Mapping[str, xr.Dataset]) -> TrainingData:
        """Build from every input by asset name, the labels among them (see :meth:`build`).

        Parameters
        ----------
        inputs : mapping of str to xarray.Dataset
            The labels and every source, by asset name (:meth:`assets`).

        Returns
        -------
        TrainingData
            Features, raw targets and the spatial split.

        Raises
        ------
        ValueError
            If the labels are not among the inputs, or as :meth:`build`.
        """
        sources = dict(inputs)
        if self.labels.asset not in sources:
            raise ValueError(f"the labels {self.labels.asset!r} are not among the inputs")
        labels = sources.pop(self.labels.asset)
        return self.build(labels, sources)

    def build(
        self,
        labels: xr.Dataset,
        sources: Mapping[str, xr.Dataset],
        versions: Mapping[str, Mapping[str, str]] | None = None,
    ) -> TrainingData:
        """Join ``sources`` (by asset name) onto the cells of ``labels`` and split them.

        Every input's sha256 fingerprint, and any ``*snapshot_id`` attribute it carries, are
        recorded in the ``data_versions`` attribute.

        Parameters
        ----------
        labels : xarray.Dataset
            The label dataset; its cells are the dataset's cells.
        sources : mapping of str to xarray.Dataset
            Every source of the config, by asset name, on the labels' grid level.
        versions : mapping, optional
            What identifies each input beyond its content hash (e.g. an Icechunk snapshot id),
            by asset name.

        Returns
        -------
        TrainingData
            Features, raw targets and the spatial split.

        Raises
        ------
        ValueError
            If an input is missing, on another grid level, or the result would be empty or
            have clashing feature names.
        """
        import pandas as pd
        import xarray as xr

        from entropice_core.spatial.grids import parent_cells

        spec = _grid_of(labels, self.labels.asset)
        ids = labels["cell_ids"].to_numpy().astype(np.uint64)
        if ids.size == 0:
            raise ValueError(f"{self.labels.asset} has no cells: the dataset would be empty")
        for name in (self.labels.count, self.labels.density):
            if name not in labels:
                present = sorted(map(str, labels.data_vars))
                raise ValueError(f"{self.labels.asset} has no variable {name!r} (has {present})")
        columns, excluded, report = [], np.zeros(ids.size, dtype=bool), {}
        for source in self.sources:
            if source.asset not in sources:
                raise ValueError(
                    f"source {source.asset!r} of the dataset config was not given; pass it or "
                    "remove it from the config"
                )
            data = sources[source.asset]
            if _grid_of(data, source.asset) != spec:
                raise ValueError(
                    f"{source.asset} is on {_grid_of(data, source.asset).key} but the labels "
                    f"are on {spec.key}: use the same grid level for every source"
                )
            frame, dropped, info = _source_columns(source, data, ids)
            columns.append(frame)
            excluded |= dropped
            report[source.asset] = info
        features = pd.concat(columns, axis=1)
        clashes = features.columns[features.columns.duplicated()].unique().tolist()
        if clashes:
            raise ValueError(f"feature names {clashes} come from several sources: set `prefix`")
        if features.shape[1] == 0:
            raise ValueError("the sources give no feature columns: the dataset would be empty")
        any_rts = labels[self.labels.count].to_numpy() > 0
        block_level = self.split.level_for(spec)
        blocks = parent_cells(spec, ids, block_level)
        role, fold, near = _split(spec, ids, blocks, any_rts, excluded, self.split)
        fingerprints = {
            self.labels.asset: labels,
            **{s.asset: sources[s.asset] for s in self.sources},
        }
        # Upstream versions a source carries in its attrs (terrain_features names the
        # terrain_derivatives commit it aggregated) travel with it.
        provenance = {
            name: {
                "sha256": fingerprint(ds),
                **{k: str(v) for k, v in ds.attrs.items() if k.endswith("snapshot_id")},
                **(versions or {}).get(name, {}),
            }
            for name, ds in fingerprints.items()
        }
        dataset = xr.Dataset(
            {
                "features": (("cell_ids", "feature"), features.to_numpy(np.float32)),
                "rts_count": ("cell_ids", labels[self.labels.count].to_numpy().astype(np.float64)),
                "rts_density": (
                    "cell_ids",
                    labels[self.labels.density].to_numpy().astype(np.float64),
                ),
                "block": ("cell_ids", blocks),
                "role": ("cell_ids", role),
                "fold": ("cell_ids", fold),
                "fold_buffer": ("cell_ids", near),
            },
            coords={
                "cell_ids": ("cell_ids", ids, spec.xdggs_attrs),
                "feature": ("feature", features.columns.to_numpy(dtype=str)),
            },
            attrs={
                "grid": spec.key,
                "block_level": block_level,
                "ensemble": self.model_dump_json(),
                "sources": json.dumps(report),
                "data_versions": json.dumps(provenance),
            },
        )
        dataset["role"].attrs.update(
            flag_values=list(ROLES.values()), flag_meanings=" ".join(ROLES)
        )
        dataset["fold"].attrs["description"] = "CV fold of training cells, -1 elsewhere"
        dataset["fold_buffer"].attrs["description"] = (
            "bit f set: left out of training while fold f validates (next to its cells)"
        )
        return TrainingData(dataset)


class TrainingData:
    """The built dataset (xarray form) with tabular and array views for training.

    ``dataset`` has ``features`` (cell_ids x feature, float32), the raw targets ``rts_count``
    and ``rts_density``, and the split: ``block``, ``role``, ``fold``, ``fold_buffer``.
    """

    REQUIRED = ("features", "rts_count", "rts_density", "block", "role", "fold", "fold_buffer")

    def __init__(self, dataset: xr.Dataset):
        missing = [name for name in self.REQUIRED if name not in dataset]
        if missing:
            raise ValueError(
                f"not a training dataset: it lacks {missing}; build it with DatasetEnsemble"
            )
        self.dataset = dataset
        self._role = dataset["role"].to_numpy()

    @property
    def spec(self) -> GridSpec:
        """The grid and level of the cells."""
        return _grid_of(self.dataset, "training dataset")

    @property
    def feature_names(self) -> list[str]:
        """The feature columns, in order."""
        return [str(f) for f in self.dataset["feature"].to_numpy()]

    @property
    def cell_ids(self) -> np.ndarray:
        """The cell ids (uint64)."""
        return self.dataset["cell_ids"].to_numpy().astype(np.uint64)

    @property
    def data_versions(self) -> dict[str, dict[str, str]]:
        """Per input asset: sha256, path and snapshot ids (see :meth:`DatasetEnsemble.build`)."""
        return json.loads(self.dataset.attrs["data_versions"])

    def mask(self, *roles: str) -> np.ndarray:
        """Select the cells whose role is any of ``roles``.

        Parameters
        ----------
        *roles : str
            ``train``, ``test``, ``buffer`` or ``excluded``.

        Returns
        -------
        numpy.ndarray
            Boolean mask over the cells.
        """
        return np.isin(self._role, [ROLES[r] for r in roles])

    def X(self, *roles: str) -> pd.DataFrame:
        """Return the features of the cells with ``roles``, indexed by cell_id.

        Parameters
        ----------
        *roles : str
            Roles as in :meth:`mask`; none selects all cells.

        Returns
        -------
        pandas.DataFrame
            One column per feature.
        """
        import pandas as pd

        keep = self.mask(*roles) if roles else np.ones(self._role.size, dtype=bool)
        values = self.dataset["features"].to_numpy()[keep]
        index = pd.Index(self.cell_ids[keep], name="cell_id")
        return pd.DataFrame(values, index=index, columns=self.feature_names)

    def xy(self, target: Target, *roles: str) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
        """Return the features, class codes and class names of the cells with ``roles``.

        Parameters
        ----------
        target : Target
            The learning task that encodes the classes.
        *roles : str
            Roles as in :meth:`mask`.

        Returns
        -------
        X : pandas.DataFrame
            Features (:meth:`X`).
        y : numpy.ndarray
            Class codes.
        names : list of str
            Class names, in code order.
        """
        codes, names = target.encode(self)
        return self.X(*roles), codes[self.mask(*roles)], names

    def cv_splits(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return (train, validation) positions within ``X("train")`` for each spatial fold.

        Validation is one fold's blocks; training is the other folds minus the cells within
        ``buffer_cells`` of a validation cell.

        Returns
        -------
        list of tuple of numpy.ndarray
            One ``(fit, validate)`` pair per fold.
        """
        train = self.mask("train")
        fold = self.dataset["fold"].to_numpy()[train]
        near = self.dataset["fold_buffer"].to_numpy()[train].astype(np.int64)
        splits = []
        for f in np.unique(fold):
            validate = np.flatnonzero(fold == f)
            fit = np.flatnonzero((fold != f) & ((near >> int(f)) & 1 == 0))
            splits.append((fit, validate))
        return splits

    def groups(self) -> np.ndarray:
        """Return the block id of each training cell (for group-aware tools of your own).

        Returns
        -------
        numpy.ndarray
            Block ids in the order of ``X("train")``.
        """
        return self.dataset["block"].to_numpy()[self.mask("train")]

    def summary(self) -> dict[str, int]:
        """Count cells per role, features, blocks and folds, for logs and metadata.

        Returns
        -------
        dict of str to int
            The counts and the block level.
        """
        counts = {f"{name}_cells": int(self.mask(name).sum()) for name in ROLES}
        return {
            "cells": int(self._role.size),
            **counts,
            "features": len(self.feature_names),
            "blocks": int(np.unique(self.dataset["block"].to_numpy()).size),
            "block_level": int(self.dataset.attrs["block_level"]),
            "folds": len(self.cv_splits()),
        }


def as_device_array(
    values: np.ndarray | pd.DataFrame, device: Device = "cpu", backend: ArrayBackend | None = None
) -> Any:
    """Put features into an array of ``backend`` on ``device`` (see ``config.resolve_backend``).

    GPU libraries are imported only here (the ``gpu`` extra).

    Parameters
    ----------
    values : numpy.ndarray or pandas.DataFrame
        The features.
    device : {"cpu", "cuda"}, optional
        Where the array lives.
    backend : {"numpy", "cupy", "torch"}, optional
        The array library; None picks the device's default.

    Returns
    -------
    numpy.ndarray, cupy.ndarray or torch.Tensor
        ``cpu`` gives numpy (or a CPU torch tensor with ``backend='torch'``), ``cuda`` a cupy
        array (or a CUDA torch tensor).

    Raises
    ------
    ImportError
        If cupy or torch is not installed.
    """
    import pandas as pd

    library = resolve_backend(device, backend)
    array = np.ascontiguousarray(values.to_numpy() if isinstance(values, pd.DataFrame) else values)
    if library == "numpy":
        return array
    try:
        if library == "cupy":
            import cupy

            return cupy.asarray(array)
        import torch

        return torch.as_tensor(array, device=device)
    except ImportError as err:
        raise ImportError(
            f"array backend {library!r} needs the gpu extra: `uv sync --extra gpu` (cupy, torch)"
        ) from err


def fingerprint(dataset: xr.Dataset) -> str:
    """Hash a dataset's content (names, dims, dtypes, values, coordinates), not its layout.

    The same data in Zarr, Icechunk or memory gives the same hash, so a model names the exact
    data it was trained on whatever the storage.

    Parameters
    ----------
    dataset : xarray.Dataset
        The dataset; its values are read.

    Returns
    -------
    str
        The sha256 hex digest.
    """
    digest = hashlib.sha256()
    for name in sorted(map(str, dataset.variables)):
        variable = dataset[name].variable
        values = np.ascontiguousarray(variable.to_numpy())
        header = f"{name}|{variable.dims}|{values.dtype.str}|{values.shape}"
        digest.update(header.encode())
        if values.dtype.kind in "OUS":
            digest.update("\x1f".join(map(str, values.ravel())).encode())
        else:
            digest.update(values.tobytes())
    return digest.hexdigest()


def open_l2(path: Path, grid_level: str) -> tuple[xr.Dataset, dict[str, str]]:
    """Open an L2 dataset of one grid level (Zarr or Icechunk) lazily, with its version.

    Parameters
    ----------
    path : Path
        The store; ``{grid_level}`` in it is filled in.
    grid_level : str
        Grid_level key, e.g. ``h3_5``.

    Returns
    -------
    dataset : xarray.Dataset
        The dataset.
    version : dict of str to str
        ``path``, and ``icechunk_snapshot_id`` (the branch's snapshot) for Icechunk.
    """
    from entropice_core.io.icechunk import branch_snapshot, read_dataset_version
    from entropice_core.io.zarr import read_dataset

    path = Path(str(path).format(grid_level=grid_level))
    if path.suffix == ".icechunk":
        snapshot = branch_snapshot(path)
        return read_dataset_version(path, grid_level, snapshot), {
            "path": str(path),
            "icechunk_snapshot_id": snapshot,
        }
    return read_dataset(path), {"path": str(path)}


def _read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path} is not valid TOML: {err}") from err


def _grid_of(dataset: xr.Dataset, name: str) -> GridSpec:
    if "cell_ids" not in dataset.coords:
        raise ValueError(f"{name} has no cell_ids coordinate: it is not an L2 dataset")
    attrs = dataset["cell_ids"].attrs
    if "grid_name" not in attrs or "level" not in attrs:
        raise ValueError(
            f"{name}'s cell_ids lack the xdggs attrs grid_name and level; write it with "
            "GridSpec.xdggs_attrs"
        )
    return GridSpec(grid=attrs["grid_name"], level=int(attrs["level"]))


def _source_columns(
    source: SourceSpec, data: xr.Dataset, ids: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """One source flattened to columns on ``ids``, its missing cells handled per its policy."""
    import pandas as pd

    # sorted: a store lists its variables in no fixed order, and models need a fixed one
    names = source.variables or sorted(
        str(v)
        for v, da in data.data_vars.items()
        if "cell_ids" in da.dims and da.dtype.kind in "biuf"
    )
    unknown = [n for n in names if n not in data.data_vars]
    if unknown:
        raise ValueError(
            f"{source.asset} has no variables {unknown}; it has {sorted(map(str, data.data_vars))}"
        )
    if source.statistics is not None:
        names = [n for n in names if n.rsplit("_", 1)[-1] in source.statistics]
    if not names:
        raise ValueError(f"{source.asset}: the variables/statistics chosen leave no variable")
    data = data[names]
    if "year" in data.dims:
        if source.years is not None:
            absent = sorted(set(source.years) - set(data["year"].to_numpy().tolist()))
            if absent:
                raise ValueError(
                    f"{source.asset} has no years {absent}; it has "
                    f"{data['year'].to_numpy().tolist()}"
                )
            data = data.sel(year=source.years)
        if source.years_reduce == "mean":
            data = data.mean("year", keep_attrs=True)
    for dim, values in source.select.items():
        if dim not in data.dims:
            raise ValueError(
                f"{source.asset} has no dim {dim!r} to select; dims: {list(data.dims)}"
            )
        data = data.sel({dim: values})
    present = np.isin(ids, data["cell_ids"].to_numpy().astype(np.uint64))
    data = data.reindex(cell_ids=ids).compute()
    columns: dict[str, np.ndarray] = {}
    for name, variable in data.data_vars.items():
        other = [d for d in variable.dims if d != "cell_ids"]
        if not other:
            columns[source.prefix + str(name)] = variable.to_numpy()
            continue
        stacked = variable.stack(_column=other).transpose("cell_ids", "_column")
        for i, key in enumerate(stacked.indexes["_column"]):
            key = key if isinstance(key, tuple) else (key,)
            label = "_".join(_fmt(v) for v in key)
            columns[f"{source.prefix}{name}_{label}"] = stacked.to_numpy()[:, i]
    frame = pd.DataFrame(columns, index=ids).astype(np.float64)
    missing = frame.isna().any(axis=1).to_numpy()
    info = {
        "columns": frame.shape[1],
        "missing_policy": source.missing,
        "cells_absent": int((~present).sum()),
        "cells_with_missing": int(missing.sum()),
    }
    if missing.any() and source.missing == "error":
        raise ValueError(
            f"{source.asset} has missing values in {int(missing.sum())} cells (e.g. "
            f"{ids[missing][:3].tolist()}); set missing = 'drop', 'fill' or 'keep' for it in "
            "the dataset config"
        )
    if source.missing == "fill":
        frame = frame.fillna(source.fill_value)
    dropped = missing if source.missing == "drop" else np.zeros(ids.size, dtype=bool)
    return frame, dropped, info


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float | np.floating) else str(value)


def _near(ids: np.ndarray, neighbours: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Cells of ``ids`` that neighbour a cell where ``source`` is set (not those cells)."""
    return np.isin(ids, neighbours[source].ravel()) & ~source


def _split(
    spec: GridSpec,
    ids: np.ndarray,
    blocks: np.ndarray,
    any_rts: np.ndarray,
    excluded: np.ndarray,
    split: SplitSpec,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roles, folds and fold-buffer bits of each cell (see the module docstring)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from entropice_core.spatial.grids import cell_neighbours

    usable = np.flatnonzero(~excluded)
    if usable.size == 0:
        raise ValueError(
            "every cell has missing features and is dropped: the dataset would be empty; set "
            "missing = 'fill' or 'keep' for the source that lacks them"
        )
    n_test_splits = max(2, round(1 / split.test_fraction))
    n_blocks = np.unique(blocks[usable]).size
    if n_blocks < n_test_splits + split.n_folds - 1:
        raise ValueError(
            f"only {n_blocks} spatial blocks of level {split.level_for(spec)} hold usable "
            f"{spec.key} cells: too few for a test share of {split.test_fraction} and "
            f"{split.n_folds} folds; lower block_area_km2 (or block_level) or use a finer level"
        )
    role = np.full(ids.size, ROLES["excluded"], dtype=np.int8)
    role[usable] = ROLES["train"]
    splitter = StratifiedGroupKFold(n_test_splits, shuffle=True, random_state=split.seed)
    _, test = next(splitter.split(usable, any_rts[usable], blocks[usable]))
    role[usable[test]] = ROLES["test"]
    neighbours = cell_neighbours(spec, ids, split.buffer_cells)
    near_test = _near(ids, neighbours, role == ROLES["test"])
    role[near_test & (role == ROLES["train"])] = ROLES["buffer"]

    fold = np.full(ids.size, -1, dtype=np.int8)
    train = np.flatnonzero(role == ROLES["train"])
    folds = StratifiedGroupKFold(split.n_folds, shuffle=True, random_state=split.seed)
    for f, (_, validate) in enumerate(folds.split(train, any_rts[train], blocks[train])):
        fold[train[validate]] = f
    near = np.zeros(ids.size, dtype=np.uint16)
    for f in range(split.n_folds):
        near |= (_near(ids, neighbours, fold == f) & (role == ROLES["train"])).astype(
            np.uint16
        ) << np.uint16(f)
    return role, fold, near
