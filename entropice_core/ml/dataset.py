"""DatasetEnsemble: join per-cell L2 datasets into training data with a spatially blocked split.

Conventions (see docs/training.md)
----------------------------------
- Every cell of the labels (``rts_labels``: every grid cell) is a cell of the dataset. Feature
  sources are reindexed onto those cells; a cell a source lacks is missing there.
- A source's variables are flattened to columns: a variable with only ``cell_ids`` keeps its
  name; other dims besides ``year`` (``quantile``, ``season``, ...) give one column per value
  combination, ``{variable}_{value}[_{value}...]`` (``elevation_quantile_0.25``).
- Two time modes from the same sources: static (one row per cell; a variable along ``year`` is
  summarised over the label years: mean, trend per decade) and yearly (one row per cell and
  label year; the values of that year and of ``lags`` years before). A dataset variant picks
  the sources and the mode; every variant shares the cells, split and folds.
- Missing values are handled per source (``SourceSpec.missing``): ``drop`` excludes the cell
  (cell-year in yearly mode), ``fill`` writes ``fill_value``, ``keep`` leaves NaN for models
  that take it (XGBoost), ``error`` refuses the data. Excluded cells stay with role
  ``excluded``; cells whose target was never observed (DARTS coverage) get ``unlabelled``.
- Spatial blocks are the ancestors of the cells at a coarser ``block_level``. Whole blocks go to
  the test set or to one CV fold, stratified by "any RTS"; training cells within
  ``buffer_cells`` steps of a test cell become ``buffer`` (used nowhere), and within a CV split
  the training cells next to that fold's validation cells are left out the same way.
"""

from __future__ import annotations

import json
import re
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from entropice_core.arrays import array_module
from entropice_core.config import ArrayBackend, Device, GridSpec, resolve_backend
from entropice_core.io.versions import fingerprint
from entropice_core.layout import Layout

if TYPE_CHECKING:  # imported where used: the configs load without the data stack
    import pandas as pd
    import xarray as xr

Task = Literal["binary", "count", "density"]
Time = Literal["static", "yearly"]
MissingPolicy = Literal["drop", "fill", "keep", "error"]
Summary = Literal["mean", "trend"]

#: Per-cell role in the split (the ``role`` variable; CF flag_values / flag_meanings).
#: ``unlabelled``: features but no observed target (DARTS never imaged the cell): predicted only.
ROLES = {"excluded": -1, "train": 0, "test": 1, "buffer": 2, "unlabelled": 3}
#: Class names of the binary task.
BINARY_CLASSES = ("no_rts", "rts")
#: Column suffixes of the static summaries of a yearly variable and of a yearly-mode lag.
TREND_SUFFIX = "_trend_per_decade"
LAG_SUFFIX = "_lag{lag}"


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
    exclude: list[str] = Field(
        default_factory=list,
        description="Variables left out (e.g. data-quality counts such as missing_days).",
    )
    statistics: list[str] | None = Field(
        default=None,
        description="Keep only variables named <anything>_<statistic> for these statistics "
        "(e.g. mean, std, quantile); default all.",
    )
    summary: list[Summary] = Field(
        default=["mean"],
        min_length=1,
        description="Static mode: what a variable along `year` becomes over the label years: "
        "'mean' (column named as the variable) and/or 'trend' (least-squares slope per decade, "
        "column <variable>_trend_per_decade).",
    )
    lags: list[int] = Field(
        default=[0],
        min_length=1,
        description="Yearly mode: for label year Y, the values of years Y - lag (0: the label "
        "year itself, column <variable>; 1: the year before, column <variable>_lag1).",
    )
    select: dict[str, list[Any]] = Field(
        default_factory=dict,
        description="Values to keep along other dims, e.g. {quantile = [0.25, 0.75]}.",
    )
    missing: MissingPolicy = Field(
        default="drop",
        description="NaN in this source: drop the cell (cell-year in yearly mode), fill with "
        "fill_value, keep NaN for models that handle it (xgboost), or raise an error.",
    )
    fill_value: float = Field(default=0.0, description="Value written where missing = 'fill'.")
    prefix: str = Field(default="", description="Prefix for the column names of this source.")

    @field_validator("lags")
    @classmethod
    def _lags(cls, value: list[int]) -> list[int]:
        if any(lag < 0 for lag in value) or len(set(value)) != len(value):
            raise ValueError(f"lags must be distinct years back (0, 1, ...), got {value}")
        return value


class LabelSpec(BaseModel):
    """Where the RTS labels come from and which variables are the targets.

    Per-year variables are NaN where the cell-year was not observed (DARTS coverage); the
    all-years ones are NaN where the cell was observed in no year.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    asset: str = "rts_labels"
    path: str | None = Field(
        default=None, description="Store under the data directory; default: the layout's."
    )
    count: str = Field(default="rts_count_all_years", description="RTS count per cell.")
    density: str = Field(default="rts_density_all_years", description="RTS per 1000 km2 of land.")
    count_yearly: str = Field(default="rts_count", description="RTS count per cell and year.")
    density_yearly: str = Field(
        default="rts_density", description="RTS per 1000 km2 of land per cell and year."
    )


class VariantSpec(BaseModel):
    """A dataset variant: which sources an experiment's model sees, and in which time mode.

    Every variant of a grid level shares the cells, split and folds of the training dataset, so
    a source's value is measured by comparing variants (an ablation) on the same test blocks.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sources: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Assets whose features are used; default every source of the dataset.",
    )
    time: Time = Field(
        default="static",
        description="'static': one row per cell, targets over all label years; 'yearly': one "
        "row per (cell, year), the target that year's RTS.",
    )


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

    Count and density classes: class 0 is "no RTS"; the rows with RTS are cut into ``n_bins``
    classes at quantiles of the *training* rows' values (so no test value shapes the bins).
    Quantiles are data values; equal edges (ties in small counts) merge bins.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Task = "binary"
    n_bins: int = Field(default=3, ge=1, le=20, description="Classes among rows with RTS.")

    def bin_edges(self, data: TrainingData) -> list[float]:
        """Return the upper edges of the classes below the last (count and density tasks).

        Parameters
        ----------
        data : TrainingData
            The dataset (in its variant's time mode); its training rows place the edges.

        Returns
        -------
        list of float
            Class ``i`` (``i >= 1``) holds values in ``(edges[i-2], edges[i-1]]`` (``0`` below
            the first); the last class everything above the last edge. Empty for binary.

        Raises
        ------
        ValueError
            If no training row has RTS (count and density tasks).
        """
        if self.task == "binary":
            return []
        value = data.target_values(self.task)
        fit = data.mask("train") & (value > 0)
        if not fit.any():
            raise ValueError(
                f"no training cell has RTS, so the {self.task} task has no classes to learn; "
                "choose a larger area or a finer grid level"
            )
        q = np.linspace(0, 1, self.n_bins + 1)[1:-1]
        edges = np.unique(np.quantile(value[fit], q, method="inverted_cdf"))
        return edges[edges < value[fit].max()].tolist()

    def encode(self, data: TrainingData) -> tuple[np.ndarray, list[str]]:
        """Return class codes 0..n-1 for every row of ``data`` and the class names.

        Parameters
        ----------
        data : TrainingData
            The built dataset; for count and density, its training rows place the bins.

        Returns
        -------
        codes : numpy.ndarray
            int64 class code of every row (-1 where the target was not observed).
        names : list of str
            The class names, in code order.

        Raises
        ------
        ValueError
            If no training row has RTS (count and density tasks).
        """
        value = data.target_values("count" if self.task == "binary" else self.task)
        observed = ~np.isnan(value)
        if self.task == "binary":
            codes = (value > 0).astype(np.int64)
            names = list(BINARY_CLASSES)
        else:
            edges = np.asarray(self.bin_edges(data))
            codes = np.where(value > 0, 1 + np.searchsorted(edges, value, side="left"), 0)
            bounds = [0.0, *edges.tolist()]
            names = ["0"] + [f"({lo:g}, {hi:g}]" for lo, hi in zip(bounds, edges, strict=False)]
            names.append(f"> {bounds[-1]:g}")
        return np.where(observed, codes, -1).astype(np.int64), names


class DatasetEnsemble(BaseModel):
    """Which L2 datasets make the training data of a grid level, its variants and its split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    labels: LabelSpec = LabelSpec()
    sources: list[SourceSpec] = Field(min_length=1)
    variants: dict[str, VariantSpec] = Field(
        default_factory=dict,
        description="Named subsets of the sources with a time mode, chosen by an experiment's "
        "`dataset` key; 'all' (every source, static) exists unless redefined.",
    )
    split: SplitSpec = SplitSpec()

    @model_validator(mode="after")
    def _consistent(self) -> DatasetEnsemble:
        names = [s.asset for s in self.sources]
        if len(set(names)) != len(names) or self.labels.asset in names:
            raise ValueError(f"each source must appear once, got {names} besides the labels")
        for variant, spec in self.variants.items():
            unknown = sorted(set(spec.sources or names) - set(names))
            if unknown:
                raise ValueError(
                    f"variant {variant!r} names sources {unknown} that are not [[sources]] of "
                    f"the dataset; the sources are {names}"
                )
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

        Raises
        ------
        ValueError
            If the file is not valid TOML or fails validation (the file is named).
        """
        try:
            return cls.model_validate(_read_toml(path))
        except ValidationError as err:
            raise config_error(path, err) from err

    def variant(self, name: str) -> VariantSpec:
        """Return the variant called ``name`` (``all``: every source, static, by default).

        Parameters
        ----------
        name : str
            Variant name, e.g. ``all``, ``terrain``, ``all-yearly``.

        Returns
        -------
        VariantSpec
            Its sources and time mode.

        Raises
        ------
        ValueError
            If no variant has that name.
        """
        variants = {"all": VariantSpec(), **self.variants}
        if name not in variants:
            raise ValueError(
                f"unknown dataset variant {name!r}; the dataset config defines {sorted(variants)}"
            )
        return variants[name]

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

        Both time modes are built: static features (``features``: one row per cell, yearly
        variables summarised over the label years) and, when the labels have a ``year`` dim,
        yearly ones (``features_yearly``: per cell and label year, with the lagged years). Every
        input's sha256 fingerprint, and any ``*snapshot_id`` attribute it carries, are recorded
        in the ``data_versions`` attribute.

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
            If an input is missing, on another grid level, lacks a label year it must
            summarise, or the result would be empty or have clashing feature names.
        """
        import pandas as pd
        import xarray as xr

        from entropice_core.spatial.grids import parent_cells

        spec = _grid_of(labels, self.labels.asset)
        ids = labels["cell_ids"].to_numpy().astype(np.uint64)
        if ids.size == 0:
            raise ValueError(f"{self.labels.asset} has no cells: the dataset would be empty")
        yearly = "year" in labels.dims
        targets = [self.labels.count, self.labels.density]
        targets += [self.labels.count_yearly, self.labels.density_yearly] if yearly else []
        for name in targets:
            if name not in labels:
                present = sorted(map(str, labels.data_vars))
                raise ValueError(f"{self.labels.asset} has no variable {name!r} (has {present})")
        years = labels["year"].to_numpy().astype(np.int64) if yearly else None
        static, by_year, excluded, report = [], [], np.zeros(ids.size, dtype=bool), {}
        year_ok = np.ones((ids.size, 0 if years is None else years.size), dtype=np.bool_)
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
            columns = _source_columns(source, data, ids, years)
            static.append(columns.static)
            by_year.append(columns)
            excluded |= columns.dropped
            year_ok = year_ok & columns.year_ok
            report[source.asset] = columns.info
        features = pd.concat(static, axis=1)
        yearly_names = [c for f in by_year for c in f.yearly_names]
        for names in (features.columns.tolist(), yearly_names):
            clashes = sorted({c for c in names if names.count(c) > 1})
            if clashes:
                raise ValueError(f"feature names {clashes} come from several sources: set `prefix`")
        if features.shape[1] == 0:
            raise ValueError("the sources give no feature columns: the dataset would be empty")
        count = labels[self.labels.count].to_numpy().astype(np.float64)
        block_level = self.split.level_for(spec)
        blocks = parent_cells(spec, ids, block_level)
        role, fold, near = _split(spec, ids, blocks, count, excluded, self.split)
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
        origin = [s.asset for s, f in zip(self.sources, static, strict=True) for _ in f.columns]
        variables: dict[str, Any] = {
            "features": (("cell_ids", "feature"), features.to_numpy(np.float32)),
            "rts_count": ("cell_ids", count),
            "rts_density": (
                "cell_ids",
                labels[self.labels.density].to_numpy().astype(np.float64),
            ),
            "block": ("cell_ids", blocks),
            "role": ("cell_ids", role),
            "fold": ("cell_ids", fold),
            "fold_buffer": ("cell_ids", near),
        }
        coords: dict[str, Any] = {
            "cell_ids": ("cell_ids", ids, spec.xdggs_attrs),
            "feature": ("feature", features.columns.to_numpy(dtype=str)),
            "feature_source": ("feature", np.asarray(origin, dtype=str)),
        }
        if yearly:
            stacked = np.concatenate([f.yearly for f in by_year], axis=2).astype(np.float32)
            yearly_origin = [
                s.asset for s, f in zip(self.sources, by_year, strict=True) for _ in f.yearly_names
            ]
            variables |= {
                "features_yearly": (("cell_ids", "year", "feature_yearly"), stacked),
                "yearly_features_ok": (("cell_ids", "year"), year_ok & ~excluded[:, None]),
                "rts_count_yearly": (
                    ("cell_ids", "year"),
                    labels[self.labels.count_yearly].to_numpy().astype(np.float64),
                ),
                "rts_density_yearly": (
                    ("cell_ids", "year"),
                    labels[self.labels.density_yearly].to_numpy().astype(np.float64),
                ),
            }
            coords |= {
                "year": ("year", years),
                "feature_yearly": ("feature_yearly", np.asarray(yearly_names, dtype=str)),
                "feature_yearly_source": ("feature_yearly", np.asarray(yearly_origin, dtype=str)),
            }
        dataset = xr.Dataset(
            variables,
            coords=coords,
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
    """The built dataset (xarray form) seen through one variant, with tabular views.

    ``dataset`` has ``features`` (cell_ids x feature, float32, each feature's asset in
    ``feature_source``), the raw targets ``rts_count`` and ``rts_density`` (NaN where never
    observed), the split (``block``, ``role``, ``fold``, ``fold_buffer``) and, for yearly mode,
    ``features_yearly`` (cell_ids x year x feature_yearly), ``yearly_features_ok`` and the
    per-year targets. A row is a cell (static) or a (cell, year) pair (yearly): every year of a
    cell has the cell's block, role and fold, so no cell-year of a test block is trained on.
    """

    REQUIRED = ("features", "rts_count", "rts_density", "block", "role", "fold", "fold_buffer")

    def __init__(self, dataset: xr.Dataset, variant: VariantSpec | None = None):
        missing = [name for name in self.REQUIRED if name not in dataset]
        if missing:
            raise ValueError(
                f"not a training dataset: it lacks {missing}; build it with DatasetEnsemble"
            )
        self.dataset = dataset
        known = list(dict.fromkeys(dataset["feature_source"].to_numpy().tolist()))
        variant = variant or VariantSpec()
        self.variant = variant if variant.sources else variant.model_copy(update={"sources": known})
        unknown = sorted(set(self.sources) - set(known))
        if unknown:
            raise ValueError(f"the training dataset has no source {unknown}; it has {known}")
        if self.variant.time == "yearly" and "features_yearly" not in dataset:
            raise ValueError(
                "yearly mode needs labels per year (a `year` dim in the labels); this training "
                "dataset has none"
            )
        role = dataset["role"].to_numpy()
        if self.yearly:
            n_years = dataset.sizes["year"]
            self._cell = np.repeat(np.arange(role.size), n_years)
            ok = dataset["yearly_features_ok"].to_numpy().ravel()
            observed = ~np.isnan(dataset["rts_count_yearly"].to_numpy().ravel())
            self._ok = ok & observed
        else:
            self._cell = np.arange(role.size)
            self._ok = np.ones(role.size, dtype=bool)
        self._role = role[self._cell]

    def with_variant(self, variant: VariantSpec) -> TrainingData:
        """Return the same data seen through another variant (its sources and time mode).

        Parameters
        ----------
        variant : VariantSpec
            Sources and time mode.

        Returns
        -------
        TrainingData
            A view sharing this dataset.
        """
        return TrainingData(self.dataset, variant)

    @property
    def sources(self) -> list[str]:
        """The assets whose features the variant uses."""
        return list(self.variant.sources or [])

    @property
    def yearly(self) -> bool:
        """Whether rows are (cell, year) pairs."""
        return self.variant.time == "yearly"

    @property
    def spec(self) -> GridSpec:
        """The grid and level of the cells."""
        return _grid_of(self.dataset, "training dataset")

    @property
    def _feature_dim(self) -> str:
        return "feature_yearly" if self.yearly else "feature"

    @property
    def feature_names(self) -> list[str]:
        """The feature columns of the variant, in order."""
        dim = self._feature_dim
        names = self.dataset[dim].to_numpy()
        chosen = np.isin(self.dataset[f"{dim}_source"].to_numpy(), self.sources)
        return [str(f) for f in names[chosen]]

    @property
    def cell_ids(self) -> np.ndarray:
        """The cell ids (uint64)."""
        return self.dataset["cell_ids"].to_numpy().astype(np.uint64)

    @property
    def data_versions(self) -> dict[str, dict[str, str]]:
        """Per input asset: sha256, path and snapshot ids (see :meth:`DatasetEnsemble.build`)."""
        return json.loads(self.dataset.attrs["data_versions"])

    def mask(self, *roles: str) -> np.ndarray:
        """Select the rows whose cell's role is any of ``roles``.

        Rows of ``train``, ``test`` and ``buffer`` cells count only where they have features
        and an observed target (yearly mode: that year's).

        Parameters
        ----------
        *roles : str
            ``train``, ``test``, ``buffer``, ``unlabelled`` or ``excluded``.

        Returns
        -------
        numpy.ndarray
            Boolean mask over the rows.
        """
        labelled = np.isin(self._role, [ROLES["train"], ROLES["test"], ROLES["buffer"]])
        return np.isin(self._role, [ROLES[r] for r in roles]) & (self._ok | ~labelled)

    def index(self, *roles: str) -> pd.Index:
        """Return the row index of ``roles``: cell_id, or (cell_id, year) in yearly mode.

        Parameters
        ----------
        *roles : str
            Roles as in :meth:`mask`; none selects all rows.

        Returns
        -------
        pandas.Index
            The rows' labels.
        """
        import pandas as pd

        keep = self.mask(*roles) if roles else np.ones(self._cell.size, dtype=bool)
        cells = self.cell_ids[self._cell[keep]]
        if not self.yearly:
            return pd.Index(cells, name="cell_id")
        years = np.tile(self.dataset["year"].to_numpy(), self.cell_ids.size)[keep]
        return pd.MultiIndex.from_arrays([cells, years], names=["cell_id", "year"])

    def X(self, *roles: str) -> pd.DataFrame:
        """Return the variant's features of the rows with ``roles``.

        Parameters
        ----------
        *roles : str
            Roles as in :meth:`mask`; none selects all rows.

        Returns
        -------
        pandas.DataFrame
            One column per feature, indexed as :meth:`index`.
        """
        import pandas as pd

        keep = self.mask(*roles) if roles else np.ones(self._cell.size, dtype=bool)
        dim = self._feature_dim
        stored = self.dataset["features_yearly" if self.yearly else "features"]
        values = stored.sel({dim: self.feature_names}).to_numpy()
        values = values.reshape(-1, values.shape[-1])[keep]
        return pd.DataFrame(values, index=self.index(*roles), columns=self.feature_names)

    def target_values(self, task: Task) -> np.ndarray:
        """Return the raw target of every row: the RTS count (binary, count) or density.

        Parameters
        ----------
        task : {"binary", "count", "density"}
            The task whose value is wanted.

        Returns
        -------
        numpy.ndarray
            float64 per row, NaN where not observed.
        """
        name = "rts_density" if task == "density" else "rts_count"
        return self.dataset[f"{name}_yearly" if self.yearly else name].to_numpy().ravel()

    def xy(self, target: Target, *roles: str) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
        """Return the features, class codes and class names of the rows with ``roles``.

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

    def _train_cells(self) -> np.ndarray:
        return self._cell[self.mask("train")]

    def cv_splits(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Return (train, validation) positions within ``X("train")`` for each spatial fold.

        Validation is one fold's blocks; training is the other folds minus the cells within
        ``buffer_cells`` of a validation cell. In yearly mode every year of a cell follows it.

        Returns
        -------
        list of tuple of numpy.ndarray
            One ``(fit, validate)`` pair per fold.
        """
        cells = self._train_cells()
        fold = self.dataset["fold"].to_numpy()[cells]
        near = self.dataset["fold_buffer"].to_numpy()[cells].astype(np.int64)
        splits = []
        for f in np.unique(fold):
            validate = np.flatnonzero(fold == f)
            fit = np.flatnonzero((fold != f) & ((near >> int(f)) & 1 == 0))
            splits.append((fit, validate))
        return splits

    def groups(self) -> np.ndarray:
        """Return the block id of each training row (for group-aware tools of your own).

        Returns
        -------
        numpy.ndarray
            Block ids in the order of ``X("train")``.
        """
        return self.dataset["block"].to_numpy()[self._train_cells()]

    def summary(self) -> dict[str, int]:
        """Count cells per role, rows, features, blocks and folds, for logs and metadata.

        Returns
        -------
        dict of str to int
            The counts and the block level.
        """
        role = self.dataset["role"].to_numpy()
        counts = {f"{name}_cells": int((role == code).sum()) for name, code in ROLES.items()}
        rows = {f"{name}_rows": int(self.mask(name).sum()) for name in ("train", "test")}
        return {
            "cells": int(role.size),
            **counts,
            **rows,
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
    xp = array_module(library, f"array backend {library!r}")
    return xp.asarray(array) if library == "cupy" else xp.as_tensor(array, device=device)


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


def config_error(path: str | Path, error: ValidationError) -> ValueError:
    """Turn a config's validation errors into one message naming the file and each key.

    Parameters
    ----------
    path : str or Path
        The config file.
    error : pydantic.ValidationError
        What validation found.

    Returns
    -------
    ValueError
        ``<path>: <key>: <problem>; ...`` (a misspelt key reads "unknown key").
    """
    problems = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"])
        message = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        message = message.removeprefix("Value error, ")
        problems.append(f"{key}: {message}" if key else message)
    return ValueError(f"{path}: " + "; ".join(problems))


def toml_error(path: str | Path, error: tomllib.TOMLDecodeError, text: str) -> ValueError:
    """Turn a TOML syntax error into one message naming the file, the line and its text.

    Parameters
    ----------
    path : str or Path
        The config file.
    error : tomllib.TOMLDecodeError
        What the parser found ("... (at line L, column C)").
    text : str
        The file's text.

    Returns
    -------
    ValueError
        ``<path> is not valid TOML: <problem> (at line L, column C): `<the line>```.
    """
    message = str(error)
    found = re.search(r"at line (\d+)", message)
    lines = text.splitlines()
    line = int(found[1]) if found else 0
    shown = f": `{lines[line - 1].strip()}`" if 0 < line <= len(lines) else ""
    return ValueError(f"{path} is not valid TOML: {message}{shown}")


def read_toml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a TOML config, naming the file in every error.

    Parameters
    ----------
    path : str or Path
        The file.
    what : str
        What the file is, for the "does not exist" message.

    Returns
    -------
    dict
        The parsed tables.

    Raises
    ------
    FileNotFoundError
        If the file does not exist (or is a folder).
    ValueError
        If it is not valid TOML (:func:`toml_error`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{what} {path} {'is a folder' if path.is_dir() else 'does not exist'}"
        )
    try:
        text = path.read_text()
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not a text (UTF-8) TOML file: {err}") from err
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise toml_error(path, err, text) from err


_read_toml = read_toml


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


@dataclass
class _Columns:
    """One source's columns on the cells: static ones, yearly ones, and their missing rows."""

    static: pd.DataFrame
    yearly_names: list[str]
    yearly: np.ndarray  # (cell, label year, column)
    dropped: np.ndarray  # cells excluded by the static columns
    year_ok: np.ndarray  # (cell, label year): yearly columns usable
    info: dict[str, Any]


def _flatten(variable: xr.DataArray, prefix: str) -> dict[str, np.ndarray]:
    """Split a variable into columns: one per value combination of its dims but cell_ids, year."""
    other = [d for d in variable.dims if d not in ("cell_ids", "year")]
    order = ["cell_ids", *(["year"] if "year" in variable.dims else [])]
    if not other:
        return {prefix + str(variable.name): variable.transpose(*order).to_numpy()}
    stacked = variable.stack(_column=other).transpose(*order, "_column")
    values = stacked.to_numpy()
    columns = {}
    for i, key in enumerate(stacked.indexes["_column"]):
        key = key if isinstance(key, tuple) else (key,)
        columns[f"{prefix}{variable.name}_{'_'.join(_fmt(v) for v in key)}"] = values[..., i]
    return columns


def trend_per_decade(values: np.ndarray, years: np.ndarray) -> np.ndarray:
    """Least-squares slope of ``values`` (cell x year) over ``years``, per 10 years.

    NaN years are left out of a cell's fit; a cell with fewer than two values gets NaN.

    Parameters
    ----------
    values : numpy.ndarray
        One row per cell, one column per year.
    years : numpy.ndarray
        The years of the columns.

    Returns
    -------
    numpy.ndarray
        The slope per decade of each cell.
    """
    ok = ~np.isnan(values)
    n = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_mean = np.where(ok, years, 0).sum(axis=1) / n
        y_mean = np.where(ok, values, 0).sum(axis=1) / n
        dx = np.where(ok, years[None, :] - x_mean[:, None], 0.0)
        dy = np.where(ok, values - y_mean[:, None], 0.0)
        slope = (dx * dy).sum(axis=1) / (dx * dx).sum(axis=1)
    return np.where(n >= 2, 10.0 * slope, np.nan)


def _source_columns(
    source: SourceSpec, data: xr.Dataset, ids: np.ndarray, label_years: np.ndarray | None
) -> _Columns:
    """One source on ``ids`` in both time modes, its missing values handled per its policy.

    Static: a variable along ``year`` becomes its summaries over the label years the source
    has (all its years when the labels have none). Yearly: per label year Y, the values of
    Y - lag; a lagged year the source lacks makes that cell-year unusable.
    """
    import pandas as pd

    # sorted: a store lists its variables in no fixed order, and models need a fixed one
    names = source.variables or sorted(
        str(v)
        for v, da in data.data_vars.items()
        if "cell_ids" in da.dims and da.dtype.kind in "biuf"
    )
    unknown = [n for n in [*names, *source.exclude] if n not in data.data_vars]
    if unknown:
        raise ValueError(
            f"{source.asset} has no variables {unknown}; it has {sorted(map(str, data.data_vars))}"
        )
    names = [n for n in names if n not in source.exclude]
    if source.statistics is not None:
        names = [n for n in names if n.rsplit("_", 1)[-1] in source.statistics]
    if not names:
        raise ValueError(f"{source.asset}: the variables/statistics chosen leave no variable")
    data = data[names]
    for dim, wanted in source.select.items():
        if dim not in data.dims:
            raise ValueError(
                f"{source.asset} has no dim {dim!r} to select; dims: {list(data.dims)}"
            )
        data = data.sel({dim: wanted})
    present = np.isin(ids, data["cell_ids"].to_numpy().astype(np.uint64))
    data = data.reindex(cell_ids=ids).compute()
    source_years = data["year"].to_numpy().astype(np.int64) if "year" in data.dims else None
    summary_years = source_years
    if source_years is not None and label_years is not None:
        summary_years = np.intersect1d(label_years, source_years)
        if summary_years.size == 0:
            raise ValueError(
                f"{source.asset} has none of the label years {label_years.tolist()} (it has "
                f"{source_years.tolist()}): static features summarise the label years; "
                "materialise those years of the source, or drop it from the dataset config"
            )
    n_years = 0 if label_years is None else label_years.size
    static: dict[str, np.ndarray] = {}
    yearly: dict[str, np.ndarray] = {}
    out_of_range = np.zeros((ids.size, n_years), dtype=bool)
    for variable in data.data_vars.values():
        for column, values in _flatten(variable, source.prefix).items():
            if "year" not in variable.dims:
                static[column] = values
                yearly[column] = np.repeat(values[:, None], n_years, axis=1)
                continue
            assert source_years is not None and summary_years is not None
            summarised = values[:, np.searchsorted(source_years, summary_years)]
            if "mean" in source.summary:
                with warnings.catch_warnings():  # all-NaN cells stay NaN
                    warnings.simplefilter("ignore", RuntimeWarning)
                    static[column] = np.nanmean(summarised, axis=1)
            if "trend" in source.summary:
                static[column + TREND_SUFFIX] = trend_per_decade(summarised, summary_years)
            if label_years is None:
                continue
            for lag in source.lags:
                lagged_years = label_years - lag
                found = np.isin(lagged_years, source_years)
                lagged = np.full((ids.size, n_years), np.nan)
                lagged[:, found] = values[:, np.searchsorted(source_years, lagged_years[found])]
                out_of_range[:, ~found] = True
                yearly[column + (LAG_SUFFIX.format(lag=lag) if lag else "")] = lagged
    # a column without a value in any cell (a trend from one year, a season not yet complete)
    # says nothing: it is left out and reported, instead of dropping every cell
    empty = [c for c, v in static.items() if np.isnan(v).all()]
    empty_yearly = [c for c, v in yearly.items() if np.isnan(v).all()]
    frame = pd.DataFrame(static, index=ids).drop(columns=empty).astype(np.float64)
    kept = [v for c, v in yearly.items() if c not in empty_yearly]
    cube = np.stack(kept, axis=2) if kept else np.empty((ids.size, n_years, 0))
    missing = frame.isna().any(axis=1).to_numpy()
    missing_years = np.isnan(cube).any(axis=2) & ~out_of_range
    info = {
        "columns": frame.shape[1],
        "yearly_columns": cube.shape[2],
        "missing_policy": source.missing,
        "cells_absent": int((~present).sum()),
        "cells_with_missing": int(missing.sum()),
        "cell_years_with_missing": int(missing_years.sum()),
        "cell_years_without_lagged_year": int(out_of_range.sum()),
        "columns_without_values": empty + [c for c in empty_yearly if c not in empty],
    }
    if summary_years is not None:
        info["summary_years"] = summary_years.tolist()
    if source.missing == "error" and (missing.any() or missing_years.any()):
        where = ids[missing | missing_years.any(axis=1)]
        raise ValueError(
            f"{source.asset} has missing values in {where.size} cells (e.g. "
            f"{where[:3].tolist()}); set missing = 'drop', 'fill' or 'keep' for it in "
            "the dataset config"
        )
    if source.missing == "fill":
        frame = frame.fillna(source.fill_value)
        cube = np.where(np.isnan(cube) & ~out_of_range[:, :, None], source.fill_value, cube)
    dropped = missing if source.missing == "drop" else np.zeros(ids.size, dtype=bool)
    unusable = out_of_range | (missing_years if source.missing == "drop" else False)
    names = [c for c in yearly if c not in empty_yearly]
    return _Columns(frame, names, cube, dropped, ~unusable, info)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float | np.floating) else str(value)


def _near(ids: np.ndarray, neighbours: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Cells of ``ids`` that neighbour a cell where ``source`` is set (not those cells)."""
    return np.isin(ids, neighbours[source].ravel()) & ~source


def _split(
    spec: GridSpec,
    ids: np.ndarray,
    blocks: np.ndarray,
    count: np.ndarray,
    excluded: np.ndarray,
    split: SplitSpec,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roles, folds and fold-buffer bits of each cell (see the module docstring)."""
    from sklearn.model_selection import StratifiedGroupKFold

    from entropice_core.spatial.grids import cell_neighbours

    unobserved = np.isnan(count)
    any_rts = count > 0
    if excluded.all():
        raise ValueError(
            "every cell has missing features and is dropped: the dataset would be empty; set "
            "missing = 'fill' or 'keep' for the source that lacks them"
        )
    usable = np.flatnonzero(~excluded & ~unobserved)
    if usable.size == 0:
        raise ValueError(
            "no cell with features was observed by DARTS (its coverage layer): there are no "
            "targets; check the coverage files or choose another area"
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
    role[~excluded & unobserved] = ROLES["unlabelled"]
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
