"""The storage layout under ``ENTROPICE_DATA_DIR``: the one module that names its paths.

The layout is a contract (architecture.md, "Storage layout"): the Dagster IO managers, the
CLI, dataset configs and the dashboard all find files through ``Layout``, so a path changes
in one place. ``{grid_level}`` is a grid_level key such as ``h3_5``, ``{year}`` an Arctic year,
``{experiment}`` an experiment key such as ``espa-binary``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

#: Every stored asset and its path template relative to the data directory.
ASSET_PATHS: dict[str, str] = {
    "watermask": "watermask/watermask.parquet",
    "grid_cells": "grids/{grid_level}.parquet",
    "darts_polygons": "darts/footprints.parquet",
    "darts_coverage": "darts/coverage.parquet",
    "rts_labels": "darts/labels_{grid_level}.zarr",
    "era5_hourly": "era5/hourly/{year}.json",
    "era5_daily": "era5/daily/{year}.zarr",
    "era5_yearly": "era5/yearly/{year}.zarr",
    "climate_features": "era5/features_{grid_level}.zarr",
    "arcticdem_tiles": "arcticdem/tiles.json",
    "terrain_derivatives": "arcticdem/derivatives.icechunk",
    "terrain_statistics": "arcticdem/statistics.zarr",
    "terrain_features": "arcticdem/features_{grid_level}.zarr",
    "alphaearth_statistics": "alphaearth/statistics.zarr",
    "alphaearth_features": "alphaearth/features_{grid_level}.zarr",
    "training_dataset": "datasets/{grid_level}.zarr",
    "trained_model": "training-results/{grid_level}/{experiment}",
    "predictions": "training-results/{grid_level}/{experiment}/predictions.parquet",
    "experiment_summary": "training-results/summary.parquet",
}
#: Flat Parquet copies of L2 datasets, next to the Zarr store.
TABLE_PATHS: dict[str, str] = {"rts_labels": "darts/labels_{grid_level}.parquet"}
#: Raw inputs as downloaded (or as the sample region writes them), one folder per source.
SOURCES = ("arcticdem", "era5", "darts", "alphaearth")


def template_fields(template: str) -> list[str]:
    """Return the ``{field}`` names of a path template, in order.

    Parameters
    ----------
    template : str
        A path template such as ``grids/{grid_level}.parquet``.

    Returns
    -------
    list of str
        The field names, e.g. ``["grid_level"]``.
    """
    return [field for _, field, _, _ in string.Formatter().parse(template) if field]


@dataclass(frozen=True)
class Layout:
    """Paths of one data directory. ``Layout(root).grid_cells("h3_5")`` etc.

    ``asset_path(asset, key)`` is the generic form the IO managers use: a single partition key
    fills the template's only field, several dimensions are given by name.
    """

    root: Path

    def __post_init__(self) -> None:
        """Accept a string root."""
        object.__setattr__(self, "root", Path(self.root))

    def asset_path(self, asset: str, key: str | None = None, **dimensions: str) -> Path:
        """Return the path of ``asset`` (one partition of it, where the template has fields).

        Parameters
        ----------
        asset : str
            An asset name of :data:`ASSET_PATHS`.
        key : str, optional
            Partition key; fills the template's only field.
        **dimensions : str
            Values of the template's fields by name, for templates with several.

        Returns
        -------
        Path
            The path under :attr:`root`.

        Raises
        ------
        KeyError
            If the asset has no place in the layout.
        ValueError
            If a field of the template is not given.
        """
        try:
            template = ASSET_PATHS[asset]
        except KeyError:
            raise KeyError(
                f"{asset!r} has no place in the storage layout; known: {', '.join(ASSET_PATHS)}"
            ) from None
        return self._fill(template, asset, key, dimensions)

    def dataset_path(self, asset: str, grid_level: str, override: str | None = None) -> Path:
        """Return the store of an L2 dataset of ``grid_level``.

        Parameters
        ----------
        asset : str
            Asset name of the dataset.
        grid_level : str
            Grid_level key, e.g. ``h3_5``.
        override : str, optional
            A template with ``{grid_level}``, relative to the root, used instead of the asset's
            place in the layout.

        Returns
        -------
        Path
            The store's path.
        """
        if override is not None:
            return self.root / override.format(grid_level=grid_level)
        return self.asset_path(asset, grid_level)

    def table_path(self, asset: str, key: str | None = None, **dimensions: str) -> Path | None:
        """Return the flat Parquet table of an L2 dataset, or None where the asset has none.

        Parameters
        ----------
        asset : str
            Asset name, a key of :data:`TABLE_PATHS`.
        key : str, optional
            Partition key; fills the template's only field.
        **dimensions : str
            Values of the template's fields by name.

        Returns
        -------
        Path or None
            The table's path.
        """
        template = TABLE_PATHS.get(asset)
        return None if template is None else self._fill(template, asset, key, dimensions)

    def _fill(self, template: str, asset: str, key: str | None, dims: dict[str, str]) -> Path:
        fields = template_fields(template)
        if key is not None and len(fields) == 1:
            dims = {fields[0]: key, **dims}
        missing = [f for f in fields if f not in dims]
        if missing:
            raise ValueError(f"the path of {asset} ({template}) needs {', '.join(missing)}")
        return self.root / template.format(**dims)

    @property
    def sources(self) -> Path:
        """The folder of raw inputs (``sources/``; the sample region's manifest lies here)."""
        return self.root / "sources"

    def source(self, name: str) -> Path:
        """Return the raw-input folder of a source (``sources/{name}``).

        Parameters
        ----------
        name : str
            One of :data:`SOURCES`.

        Returns
        -------
        Path
            The folder.

        Raises
        ------
        ValueError
            If the source is unknown.
        """
        if name not in SOURCES:
            raise ValueError(f"unknown source {name!r}; known: {', '.join(SOURCES)}")
        return self.sources / name

    @property
    def watermask(self) -> Path:
        """The water polygons (GeoParquet)."""
        return self.asset_path("watermask")

    def grid_cells(self, grid_level: str) -> Path:
        """Return the grid cells of a grid level (GeoParquet).

        Parameters
        ----------
        grid_level : str
            Grid_level key, e.g. ``h3_5``.

        Returns
        -------
        Path
            ``grids/{grid_level}.parquet``.
        """
        return self.asset_path("grid_cells", grid_level)

    def rts_labels(self, grid_level: str) -> Path:
        """Return the RTS label store of a grid level (Zarr).

        Parameters
        ----------
        grid_level : str
            Grid_level key, e.g. ``h3_5``.

        Returns
        -------
        Path
            ``darts/labels_{grid_level}.zarr``.
        """
        return self.asset_path("rts_labels", grid_level)

    def era5_daily(self, year: int | str) -> Path:
        """Return the daily ERA5 store of an Arctic year (Zarr).

        Parameters
        ----------
        year : int or str
            The Arctic year.

        Returns
        -------
        Path
            ``era5/daily/{year}.zarr``.
        """
        return self.asset_path("era5_daily", str(year))

    def era5_yearly(self, year: int | str) -> Path:
        """Return the yearly climate-index store of an Arctic year (Zarr).

        Parameters
        ----------
        year : int or str
            The Arctic year.

        Returns
        -------
        Path
            ``era5/yearly/{year}.zarr``.
        """
        return self.asset_path("era5_yearly", str(year))

    def era5_yearly_stores(self) -> list[Path]:
        """Return the era5_yearly stores present, oldest year first.

        Returns
        -------
        list of Path
            The stores on disk; years not yet computed are absent.
        """
        folder = self.era5_yearly("0").parent
        return sorted(p for p in folder.glob("*.zarr") if p.stem.isdigit())

    @property
    def terrain_derivatives(self) -> Path:
        """The terrain derivatives (Icechunk repository)."""
        return self.asset_path("terrain_derivatives")

    def icechunk_repositories(self) -> dict[str, Path]:
        """Return the Icechunk repositories of the layout that exist, by asset.

        Returns
        -------
        dict of str to Path
            Asset name to repository path (``*.icechunk``), for the maintenance job.
        """
        return {
            asset: path
            for asset, template in ASSET_PATHS.items()
            if template.endswith(".icechunk") and not template_fields(template)
            if (path := self.asset_path(asset)).is_dir()
        }

    def training_dataset(self, grid_level: str) -> Path:
        """Return the training dataset of a grid level (Zarr).

        Parameters
        ----------
        grid_level : str
            Grid_level key, e.g. ``h3_5``.

        Returns
        -------
        Path
            ``datasets/{grid_level}.zarr``.
        """
        return self.asset_path("training_dataset", grid_level)

    def experiment(self, grid_level: str, experiment: str) -> Path:
        """Return the folder of one trained experiment.

        Parameters
        ----------
        grid_level : str
            Grid_level key, e.g. ``h3_5``.
        experiment : str
            Experiment key, e.g. ``espa-binary``.

        Returns
        -------
        Path
            The folder of the model file, CV results, config and predictions.
        """
        return self.asset_path("trained_model", grid_level=grid_level, experiment=experiment)

    def predictions(self, grid_level: str, experiment: str) -> Path:
        """Return the predictions of a trained experiment (GeoParquet, in its folder).

        Parameters
        ----------
        grid_level : str
            Grid_level key, e.g. ``h3_5``.
        experiment : str
            Experiment key, e.g. ``espa-binary``.

        Returns
        -------
        Path
            ``training-results/{grid_level}/{experiment}/predictions.parquet``.
        """
        return self.asset_path("predictions", grid_level=grid_level, experiment=experiment)

    def experiment_folders(self) -> list[tuple[str, str, Path]]:
        """List the experiment folders present: ``(grid_level, experiment, folder)``.

        Returns
        -------
        list of tuple of (str, str, Path)
            Every ``training-results/{grid_level}/{experiment}/`` directory, sorted.
        """
        root = self.root / ASSET_PATHS["trained_model"].split("{", 1)[0]
        if not root.is_dir():
            return []
        return [
            (level.name, folder.name, folder)
            for level in sorted(root.iterdir())
            if level.is_dir() and not level.name.startswith(".")
            for folder in sorted(level.iterdir())
            if folder.is_dir() and not folder.name.startswith(".")  # versions are hidden
        ]

    @property
    def experiment_summary(self) -> Path:
        """The summary table of the trained experiments (``training-results/summary.parquet``)."""
        return self.asset_path("experiment_summary")
