"""The ``entropice`` command line: build grids and watermasks, train and predict, run the demo.

Every command that writes takes ``--data-dir`` (default: ``$ENTROPICE_DATA_DIR`` or ``./data``)
and follows the storage layout (``entropice_core.layout``: ``grids/{grid_level}.parquet``, ...).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from cyclopts import App, Parameter
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from entropice_core import __version__
from entropice_core.config import (
    DEFAULT_GRID_LEVELS,
    AreaOfInterest,
    GridCellsConfig,
    GridSpec,
    Settings,
    WatermaskConfig,
)
from entropice_core.ingest.darts import MIN_OBSERVED_FRACTION
from entropice_core.io.assets import read_manifest, store_dataset, write_manifest
from entropice_core.io.geoparquet import read_geoparquet, write_geoparquet
from entropice_core.layout import Layout
from entropice_core.spatial.grids import grid_cells
from entropice_core.spatial.watermask import water_polygons

if TYPE_CHECKING:
    import geopandas as gpd
    import xarray as xr

console = Console(stderr=True)
app = App(
    name="entropice",
    help="Entropice: RTS density on discrete global grids. "
    "Commands write under --data-dir (default $ENTROPICE_DATA_DIR or ./data).",
    version=__version__,
)

AoiOption = Annotated[
    str,
    Parameter(
        help="Area of interest: 'sample' (the embedded sample region), 'arctic' (north of "
        "50 N), 'north-of:LAT', a box 'minlon,minlat,maxlon,maxlat' in degrees (minlon > maxlon "
        "crosses 180), or a vector file (.parquet, .gpkg, .geojson) with a CRS.",
        allow_leading_hyphen=True,
    ),
]
AreaOption = Annotated[
    str | None,
    Parameter(
        help="Only the part of the upstream data inside this area of interest (the forms "
        "of `entropice grids --aoi`): cells that intersect it, grid points or tiles that "
        "cover it. Default: everything the upstream files hold, as the Dagster asset.",
        allow_leading_hyphen=True,
    ),
]
DataDirOption = Annotated[
    Path | None,
    Parameter(help="Root of the storage hierarchy (default: $ENTROPICE_DATA_DIR or ./data)."),
]
GridLevelOption = Annotated[
    str | None,
    Parameter(
        help="Grid and level as one key, e.g. h3_5 or healpix_8 (commands that take several "
        "levels: also a comma-separated list, h3_5,h3_6)."
    ),
]
GridOption = Annotated[str | None, Parameter(help="Grid system: h3 or healpix.")]
LevelOption = Annotated[
    int | None, Parameter(help="Grid level (H3 resolution 0-15, HEALPix order 0-29).")
]
AllLevelsOption = Annotated[
    bool,
    Parameter(
        help=f"Every grid level ({' '.join(DEFAULT_GRID_LEVELS)}) instead of one.", negative=()
    ),
]
YearsOption = Annotated[
    list[int] | None,
    Parameter(
        help="Arctic years (Y runs 1 Oct Y-1 to 30 Sep Y): --year 2022 2023, or --year 2022 "
        "--year 2023.",
        consume_multiple=True,
        negative=(),
    ),
]

#: The command that writes each asset's file, for "does not exist" messages.
WRITERS = {
    "watermask": "entropice watermask <aoi>",
    "grid_cells": "entropice grids --grid-level {key}",
    "darts_polygons": "entropice labels --grid-level <level>",
    "rts_labels": "entropice labels --grid-level {key}",
    "era5_hourly": "entropice era5 download --year {key}",
    "era5_daily": "entropice era5 daily --year {key}",
    "era5_yearly": "entropice era5 yearly",
    "climate_features": "entropice era5 features --grid-level {key}",
    "arcticdem_tiles": "entropice terrain tiles",
    "terrain_derivatives": "entropice terrain derivatives",
    "terrain_features": "entropice terrain features --grid-level {key}",
    "alphaearth_features": "entropice alphaearth --grid-level {key}",
    "training_dataset": "entropice dataset --grid-level {key}",
}


def _progress(*, steps: bool = False) -> Progress:
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if steps:  # one step per grid level or year: a bar and "done/total"
        columns += [BarColumn(), MofNCompleteColumn()]
    # in a log file (not a terminal) the "wrote" lines say what happened: no final bar
    return Progress(
        *columns, TimeElapsedColumn(), console=console, transient=not console.is_terminal
    )


def _resolve_grid(grid_level: str | None, grid: str | None, level: int | None) -> GridSpec:
    if grid_level is not None:
        return GridSpec.from_key(grid_level)
    if grid is None or level is None:
        raise ValueError("give --grid-level h3_5, or both --grid and --level")
    return GridSpec.from_key(f"{grid}_{level}")


def _resolve_levels(
    grid_level: str | None, grid: str | None, level: int | None, all_levels: bool
) -> list[GridSpec]:
    """Return the levels of a per-level command: one, several (``h3_5,h3_6``) or all."""
    given = grid_level is not None or grid is not None or level is not None
    if all_levels:
        if given:
            raise ValueError("give either one grid level (--grid-level h3_5) or --all-levels")
        return [GridSpec.from_key(key) for key in DEFAULT_GRID_LEVELS]
    if not given:
        raise ValueError("give --grid-level h3_5 (or --grid and --level), or --all-levels")
    if grid_level is not None and "," in grid_level:  # several levels: h3_5,h3_6
        return [GridSpec.from_key(key.strip()) for key in grid_level.split(",")]
    return [_resolve_grid(grid_level, grid, level)]


def _upstream(layout: Layout, asset: str, key: str | None = None) -> Path:
    """Return an input asset's file; absent, fail naming it and the command that writes it."""
    path = layout.asset_path(asset, key)
    if not path.exists():
        command = WRITERS[asset].format(key=key)
        raise FileNotFoundError(f"{path} does not exist: run `{command}` first")
    return path


def _each(
    progress: Progress,
    what: str,
    keys: Sequence[str],
    work: Callable[[str, Callable[[str], None]], str],
) -> None:
    """Run ``work(key, report)`` per grid level (or year) under one bar.

    ``report`` shows a step of the key's work on the bar; what each key wrote is printed,
    and a failure names its key.
    """
    task = progress.add_task(what, total=len(keys))
    for key in keys:
        progress.update(task, description=f"{what} {key}")

        def report(message: str, key: str = key) -> None:
            progress.update(task, description=f"{what} {key}: {message}")

        try:
            done = work(key, report)
        except Exception:
            if len(keys) > 1:  # with one key, the command line names it
                console.print(f"[red]failed at {key}[/]")
            raise
        console.print(f"[green]wrote[/] {done}")
        progress.advance(task)


def _area(aoi: str | None) -> AreaOfInterest | None:
    """Parse ``--aoi`` before any work (a bad area fails here); None: no restriction."""
    return None if aoi is None else AreaOfInterest.parse(aoi)


def _boxes(aoi: str | None) -> list[tuple[float, float, float, float]] | None:
    """Parse ``--aoi`` into lon/lat boxes (two across 180 degrees); None: no restriction."""
    area = _area(aoi)
    return None if area is None else [part.bounds for part in area.parts]


def _cells_in(cells: gpd.GeoDataFrame, area: AreaOfInterest | None, key: str) -> gpd.GeoDataFrame:
    """Keep the cells of a grid level that intersect ``area`` (all of them for None)."""
    if area is None:
        return cells
    inside = cells[cells.to_crs(4326).intersects(area.geometry)]
    if inside.empty:
        raise ValueError(
            f"no {key} cell intersects --aoi {area.name!r}: the grid level covers "
            f"{', '.join(f'{v:.2f}' for v in cells.to_crs(4326).total_bounds)} (lon/lat); "
            "give an area inside it, or build the cells for that area with `entropice grids`"
        )
    return inside


def _one_out(out: Path | None, specs: Sequence[GridSpec]) -> None:
    if out is not None and len(specs) > 1:
        raise ValueError(f"--out {out} names one output: give one grid level with it")


def _client_kind(client: str | None, aoi: str, real: str) -> str:
    """Choose the source client: as given, else as the resources do (offline for sample)."""
    AreaOfInterest.parse(aoi)  # a bad area fails here, before any work
    if client is not None:
        return client
    return "offline" if AreaOfInterest.check_spec(aoi) == "sample" else real


def _offline_how(real: str) -> str:
    return (
        f"run `entropice sample` for the sample region, give --client {real} to download "
        "them, or copy them from a mirror in the same layout"
    )


def _describe(dataset: xr.Dataset) -> str:
    sizes = " x ".join(f"{n:,} {d}" for d, n in dataset.sizes.items())
    return f"{sizes}, {len(dataset.data_vars)} variables"


def _watermask_config(water_file: Path | None) -> WatermaskConfig:
    if water_file is None:
        return WatermaskConfig()
    return WatermaskConfig(source="file", path=water_file)


@app.command
def watermask(
    aoi: AoiOption = "sample",
    *,
    water_file: Annotated[
        Path | None,
        Parameter(
            help="Your own water polygons (GeoParquet/GeoPackage with a CRS) instead of "
            "the built-in global-land-mask ocean mask, e.g. a hydrography layer with lakes."
        ),
    ] = None,
    data_dir: DataDirOption = None,
    out: Annotated[
        Path | None,
        Parameter(help="Output GeoParquet (default: DATA_DIR/watermask/watermask.parquet)."),
    ] = None,
) -> None:
    """Write water polygons covering an area of interest (plus a 250 km margin).

    Parameters
    ----------
    aoi : str
        Area of interest spec (see ``AreaOfInterest.parse``).
    water_file : Path, optional
        Own water polygons instead of the built-in ocean mask.
    data_dir : Path, optional
        Root of the storage hierarchy.
    out : Path, optional
        Output GeoParquet instead of the layout's place.
    """
    area = AreaOfInterest.parse(aoi)
    target = out or _layout(data_dir).watermask
    _writable([target], out)
    with _progress() as progress:
        progress.add_task(f"water polygons for {area.name}", total=None)
        water = water_polygons(area, _watermask_config(water_file))
        write_geoparquet(water, target)
    console.print(f"[green]wrote[/] {target} ({len(water)} tiles)")


@app.command
def grids(
    *,
    grid_level: GridLevelOption = None,
    grid: GridOption = None,
    level: LevelOption = None,
    all_levels: AllLevelsOption = False,
    aoi: AoiOption = "sample",
    min_land_fraction: Annotated[
        float, Parameter(help="Drop cells whose land fraction is at or below this.")
    ] = 0.0,
    water_file: Annotated[
        Path | None, Parameter(help="Your own water polygons instead of the built-in ocean mask.")
    ] = None,
    data_dir: DataDirOption = None,
    out: Annotated[
        Path | None,
        Parameter(help="Output GeoParquet (default: DATA_DIR/grids/{grid_level}.parquet)."),
    ] = None,
) -> None:
    """Build the grid cells of one grid level over an area of interest, with land areas.

    Cells whose centre lies in the area are kept unless they are ocean; each row has cell_id,
    geometry (EPSG:4326, cut at 180 degrees), land_area_km2 (WGS84) and land_fraction.

    Example: entropice grids --grid h3 --level 5 --aoi -138.5,66.5,-131.5,69.2 --out cells.parquet

    Parameters
    ----------
    grid_level : str, optional
        Grid and level as one key; or give ``grid`` and ``level``.
    grid : str, optional
        Grid system: h3 or healpix.
    level : int, optional
        Grid level.
    all_levels : bool
        Every default grid level (the water polygons are built once).
    aoi : str
        Area of interest spec (see ``AreaOfInterest.parse``).
    min_land_fraction : float
        Cells at or below this land fraction are dropped.
    water_file : Path, optional
        Own water polygons instead of the built-in ocean mask.
    data_dir : Path, optional
        Root of the storage hierarchy.
    out : Path, optional
        Output GeoParquet instead of the layout's place.
    """
    specs = _resolve_levels(grid_level, grid, level, all_levels)
    _one_out(out, specs)
    area = AreaOfInterest.parse(aoi)
    layout = _layout(data_dir)
    _writable([out or layout.grid_cells(spec.key) for spec in specs], out)
    config = GridCellsConfig(min_land_fraction=min_land_fraction)
    with _progress(steps=True) as progress:
        task = progress.add_task(f"water polygons for {area.name}", total=None)
        water = water_polygons(area, _watermask_config(water_file))
        progress.remove_task(task)

        def one(key: str, report: Callable[[str], None]) -> str:
            start, spec = time.perf_counter(), GridSpec.from_key(key)
            target = out or layout.grid_cells(key)
            cells = grid_cells(spec, area, water, config, progress=report)
            report(f"writing {target}")
            write_geoparquet(cells, target)
            return (
                f"{target}: {len(cells):,} {key} cells, {cells.land_area_km2.sum():,.0f} km2 of "
                f"land, {time.perf_counter() - start:.1f} s"
            )

        _each(progress, "grid cells", [spec.key for spec in specs], one)


@app.command
def summary(data_dir: DataDirOption = None) -> None:
    """Print what the data directory holds per grid level.

    Parameters
    ----------
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    layout = _layout(data_dir)
    table = Table(title=f"Entropice outputs in {layout.root}")
    for column in ("grid level", "cells", "land km2", "file"):
        table.add_column(column, justify="right" if column != "file" else "left")
    for key in DEFAULT_GRID_LEVELS:
        path = layout.grid_cells(key)
        if path.exists():
            cells = read_geoparquet(path)
            table.add_row(key, f"{len(cells):,}", f"{cells.land_area_km2.sum():,.0f}", str(path))
        else:
            table.add_row(key, "-", "-", "not materialised")
    Console().print(table)


@app.command
def demo(data_dir: DataDirOption = None) -> None:
    """Materialise the whole asset graph on the sample region, then print a summary.

    Runs in Dagster (on the instance in $DAGSTER_HOME, so the runs show in the UI); open the UI
    afterwards with `make ui` (http://127.0.0.1:3000).

    Parameters
    ----------
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    root = data_dir or Settings.from_env().data_dir
    _writable([Path(root) / "sources"], kind="folder")
    env = {**os.environ, "ENTROPICE_DATA_DIR": str(root), "ENTROPICE_AOI": "sample"}
    result = subprocess.run([sys.executable, "-m", "entropice_dagster.demo"], env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(result.returncode)


def _layout(data_dir: Path | None) -> Layout:
    """Return the storage layout under --data-dir (default $ENTROPICE_DATA_DIR or ./data)."""
    return Layout(data_dir or Settings.from_env().data_dir)


def _writable(
    targets: Sequence[Path],
    out: Path | None = None,
    kind: Literal["file", "folder"] = "file",
    option: str = "--out",
) -> None:
    """Refuse outputs that cannot be written, before any work.

    A read-only folder, or a file where a folder goes; the message names ``option`` when
    ``out`` (its value) chose the path, else --data-dir.
    """
    from entropice_core.io.writable import check_writable

    for target in targets:
        check_writable(target, option if out is not None else "--data-dir", kind)


@app.command
def train(
    *,
    config: Annotated[Path, Parameter(help="Experiment file, e.g. configs/espa-binary.toml.")],
    grid_level: Annotated[str, Parameter(help="Grid level to train on, e.g. h3_5.")],
    n_iter: Annotated[
        int | None, Parameter(help="Search candidates (default: the config's search.n_iter).")
    ] = None,
    importance_repeats: Annotated[
        int | None,
        Parameter(help="Permutation-importance shuffles per feature (default: the config's)."),
    ] = None,
    data_dir: DataDirOption = None,
    out: Annotated[
        Path | None,
        Parameter(help="Output folder (default: DATA_DIR/training-results/{grid_level}/{name})."),
    ] = None,
) -> None:
    """Train one experiment on the L2 datasets of a grid level (see docs/training.md).

    Reads the labels and features the config's dataset names under DATA_DIR, tunes the model
    by randomised search over spatial CV folds, and writes the model file, CV results, scores,
    feature importance and the resolved config.

    Example: entropice train --config configs/espa-binary.toml --grid-level h3_5

    Parameters
    ----------
    config : Path
        Experiment config file.
    grid_level : str
        Grid level to train on.
    n_iter : int, optional
        Search candidates instead of the config's ``search.n_iter``.
    importance_repeats : int, optional
        Permutation-importance shuffles per feature instead of the config's.
    data_dir : Path, optional
        Root of the storage hierarchy.
    out : Path, optional
        Output folder instead of the layout's place.
    """
    from entropice_core.ml.training import ExperimentConfig, save_experiment, train_experiment

    experiment = ExperimentConfig.from_toml(config).with_budget(n_iter, importance_repeats)
    layout = _layout(data_dir)
    key = GridSpec.from_key(grid_level).key
    target = out or layout.experiment(key, experiment.name)
    _writable([target], out, "folder")
    with _progress() as progress:
        task = progress.add_task(f"{grid_level}: reading the datasets", total=None)
        data = experiment.ensemble.open(layout.root, key)
        result = train_experiment(
            data, experiment, lambda message: progress.update(task, description=message)
        )
        save_experiment(result, target)
    table = Table(title=f"{experiment.name} on {grid_level}")
    for column in ("metric", "CV mean", "CV std", "test", "majority CV", "majority test"):
        table.add_column(column, justify="right")
    for metric, row in result.scores.iterrows():
        table.add_row(str(metric), *(f"{v:.3f}" for v in row))
    Console().print(table)
    verdict = "beats" if result.beats_baseline() else "[red]does not beat[/]"
    console.print(f"{verdict} the majority baseline on {result.refit_metric}; wrote {target}")


@app.command
def predict(
    *,
    grid_level: Annotated[str, Parameter(help="Grid level, e.g. h3_5.")],
    experiment: Annotated[str, Parameter(help="Experiment key, e.g. espa-binary.")],
    batch_size: Annotated[int, Parameter(help="Cells per batch (bounds memory).")] = 65_536,
    data_dir: DataDirOption = None,
    out: Annotated[
        Path | None,
        Parameter(help="Output GeoParquet (default: next to the model, predictions.parquet)."),
    ] = None,
) -> None:
    """Predict every cell of a grid level with a trained experiment (`entropice train`).

    Parameters
    ----------
    grid_level : str
        Grid level.
    experiment : str
        Experiment key.
    batch_size : int
        Cells per batch (bounds memory).
    data_dir : Path, optional
        Root of the storage hierarchy.
    out : Path, optional
        Output GeoParquet instead of the place next to the model.
    """
    from entropice_core.ml.inference import predict_cells
    from entropice_core.ml.training import RESOLVED_CONFIG, ExperimentConfig, load_model

    layout, key = _layout(data_dir), GridSpec.from_key(grid_level).key
    _writable([out or layout.predictions(key, experiment)], out)
    folder = layout.experiment(key, experiment)
    model, stamp = load_model(folder)
    resolved = ExperimentConfig.from_toml(folder / RESOLVED_CONFIG)
    cells = read_geoparquet(layout.grid_cells(key))
    with _progress() as progress:
        task = progress.add_task(f"{experiment} on {key}", total=None)
        data = resolved.ensemble.open(layout.root, key)
        frame = predict_cells(
            model,
            data.dataset,
            cells,
            stamp["classes"],
            stamp["feature_names"],
            batch_size=batch_size,
            device=stamp.get("predict_device", "cpu"),
            time=stamp.get("time", "static"),
            progress=lambda done, total: progress.update(
                task, description=f"{experiment} on {key}: {done:,}/{total:,} cells"
            ),
        )
        target = out or layout.predictions(key, experiment)
        write_geoparquet(frame, target)
    counts = frame["predicted_label"].value_counts(dropna=False).to_dict()
    console.print(f"[green]wrote[/] {target}: {len(frame):,} cells, {counts}")


@app.command
def alphaearth(
    *,
    grid_level: GridLevelOption = None,
    grid: GridOption = None,
    level: LevelOption = None,
    all_levels: AllLevelsOption = False,
    aoi: AreaOption = None,
    year: Annotated[
        list[int] | None,
        Parameter(
            help="Years to fetch (2017 onward): --year 2020 2021, or --year 2020 --year 2021. "
            "Default: "
            "every year the source has (COGs: the year folders; Earth Engine: 2017-2024).",
            consume_multiple=True,
            negative=(),
        ),
    ] = None,
    source: Annotated[
        Literal["cogs", "earthengine", "gcs"],
        Parameter(
            help="'cogs': the int8 COGs under --cog-dir (the sample region, or a local mirror "
            "of gs://alphaearth_foundations); 'earthengine': reduceRegions with the service "
            "account in ENTROPICE_EE_SERVICE_ACCOUNT, ENTROPICE_EE_KEY_FILE (or "
            "ENTROPICE_EE_KEY_DATA) and ENTROPICE_EE_PROJECT; 'gcs': download the missing COGs "
            "of the cells' zones from the requester-pays bucket into --cog-dir (billed to "
            "ENTROPICE_EE_PROJECT; token from the key or ENTROPICE_GCS_TOKEN), then as 'cogs'."
        ),
    ] = "cogs",
    cog_dir: Annotated[
        Path | None,
        Parameter(help="COG folder {year}/{zone}N/*.tiff (default: DATA_DIR/sources/alphaearth)."),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        Parameter(
            help="Answers (per level and year from COGs, per cluster and year from Earth "
            "Engine), reused by later runs (default: "
            "DATA_DIR/sources/alphaearth/requests/{source})."
        ),
    ] = None,
    data_dir: DataDirOption = None,
    out: Annotated[
        Path | None,
        Parameter(
            help="Output Zarr store (default: DATA_DIR/alphaearth/features_{grid_level}.zarr)."
        ),
    ] = None,
) -> None:
    """Per-cell AlphaEarth satellite embeddings of grid levels (see docs/alphaearth.md).

    Reads the levels' cells (DATA_DIR/grids/{grid_level}.parquet: run `entropice grids`
    first) and writes per level an xdggs Zarr store with dims (cell_ids, year): A00..A63 (cell
    means of the 64-dimensional embeddings) and valid_fraction. From the COGs ('cogs', 'gcs'),
    every file of a year is read once for all the levels given; from Earth Engine, the cells
    of each level go in KMeans clusters, one request each per year. Either way each answer is
    cached: a year fetched before costs no request. Data: CC-BY 4.0, "The AlphaEarth
    Foundations Satellite Embedding dataset is produced by Google and Google DeepMind."

    Example: entropice alphaearth --grid-level h3_5 --year 2020 --year 2021
    """
    from entropice_core.config import EarthEngineCredentials
    from entropice_core.features.alphaearth import (
        alphaearth_features_levels,
        cost_summary,
        feature_summary,
    )
    from entropice_core.ingest import alphaearth as ae
    from entropice_core.io.zarr import write_dataset

    specs = _resolve_levels(grid_level, grid, level, all_levels)
    _one_out(out, specs)
    area = _area(aoi)
    layout = _layout(data_dir)
    cells = {spec.key: _upstream(layout, "grid_cells", spec.key) for spec in specs}
    cogs = cog_dir or layout.source("alphaearth")
    cache_folder = cache_dir or layout.source("alphaearth") / "requests" / source
    stores = [out or layout.asset_path("alphaearth_features", spec.key) for spec in specs]
    _writable(stores, out, "folder")
    _writable([cache_folder], cache_dir, "folder", "--cache-dir")
    if source == "gcs":
        _writable([cogs], cog_dir, "folder", "--cog-dir")
    cache = ae.ClusterCache(cache_folder)
    client: ae.EmbeddingClient
    if source == "cogs":
        client = ae.CogClient(cogs, cache=cache)
        years = year or (ae.years_available(cogs) if cogs.is_dir() else [])
        if not years:
            raise FileNotFoundError(
                f"no AlphaEarth year folders under {cogs}: run `entropice sample` (the sample "
                "region) or mirror gs://alphaearth_foundations/{year}/ there, or give --cog-dir"
            )
    elif source == "gcs":
        env = EarthEngineCredentials.from_env()
        try:
            client = ae.GcsCogClient(
                cogs,
                env.project,
                token=env.gcs_token.get_secret_value() if env.gcs_token else None,
                key_file=env.key_file,
                key_data=env.key_data.get_secret_value() if env.key_data else None,
                cache=cache,
            )
        except ae.CredentialsMissing as err:
            raise ValueError(str(err)) from None
        years = year or list(range(ae.FIRST_YEAR, ae.LAST_YEAR + 1))
    else:
        env = EarthEngineCredentials.from_env()
        key_data = env.key_data.get_secret_value() if env.key_data else None
        try:
            client = ae.EarthEngineClient(
                env.service_account,
                env.project,
                key_file=env.key_file,
                key_data=key_data,
                cache=cache,
            )
        except ae.CredentialsMissing as err:
            raise ValueError(str(err)) from None
        years = year or list(range(ae.FIRST_YEAR, ae.LAST_YEAR + 1))
    frames = {key: _cells_in(read_geoparquet(path), area, key) for key, path in cells.items()}
    what = f"AlphaEarth {', '.join(map(str, years))}"
    with _progress(steps=True) as progress:
        fetching = progress.add_task(f"{what}: {', '.join(frames)}", total=None)
        results = alphaearth_features_levels(client, frames, years)
        progress.remove_task(fetching)

        def one(key: str, report: Callable[[str], None]) -> str:
            target = out or layout.asset_path("alphaearth_features", key)
            write_dataset(results[key].dataset, target)
            info = feature_summary(results[key].dataset)
            cost = cost_summary({key: results[key]})
            return (
                f"{target}: {info['cells']:,} cells x {len(info['years'])} years, "
                f"{cost['requests']} requests, {cost['requests_from_cache']} from cache"
            )

        _each(progress, "writing", list(frames), one)


@app.command
def levels() -> None:
    """Print the default grid levels, one per line (the run-all scripts loop over them)."""
    print("\n".join(DEFAULT_GRID_LEVELS))


@app.command
def sample(
    *,
    seed: Annotated[int, Parameter(help="Seed of the latent world (the demo's is 42).")] = 42,
    force: Annotated[
        bool, Parameter(help="Rewrite even when a complete set for the seed exists.")
    ] = False,
    scale: Annotated[
        float,
        Parameter(
            help="Area relative to the sample region (1/64 to 64). Other than 1 writes a "
            "larger or smaller synthetic region for scale runs: its ArcticDEM tiles ONLY (no "
            "ERA5, DARTS or AlphaEarth files); its area of interest, printed at the end, is "
            "the bbox to give as --aoi. 16 writes about 170 tiles (about 2.7 GB)."
        ),
    ] = 1.0,
    data_dir: DataDirOption = None,
) -> None:
    """Write the embedded sample region's source files under DATA_DIR/sources.

    ArcticDEM tiles, ERA5 hourly files, DARTS footprints and AlphaEarth COGs in the real
    sources' formats and layouts, for the stage commands to run on offline
    (`entropice demo` writes them too). With --scale, the DEM tiles of a region that many
    times the sample's area (benchmarks/scale.py).

    Example: entropice sample --data-dir data; entropice sample --scale 16 --data-dir big

    Parameters
    ----------
    seed : int
        Seed of the latent world.
    force : bool
        Rewrite even when complete.
    scale : float
        Area relative to the sample region; other than 1 writes the DEM tiles only.
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    from entropice_core.sample import generate_sample_region, region_bbox

    bbox = region_bbox(scale)  # a scale out of range fails here, before any work
    root = _layout(data_dir).root
    _writable([root / "sources"], kind="folder")
    with _progress() as progress:
        task = progress.add_task("sample region", total=None)
        files = generate_sample_region(
            root,
            seed,
            lambda line: progress.update(task, description=line),
            force=force,
            scale=scale,
        )
    console.print(f"[green]wrote[/] {files.manifest.parent} ({len(files.paths)} files)")
    if scale != 1:
        aoi = ",".join(f"{v:g}" for v in bbox)
        console.print(
            f"DEM tiles only (scale {scale:g}); area of interest: --aoi {aoi}", soft_wrap=True
        )


@app.command
def labels(
    *,
    grid_level: GridLevelOption = None,
    grid: GridOption = None,
    level: LevelOption = None,
    all_levels: AllLevelsOption = False,
    aoi: AoiOption = "sample",
    client: Annotated[
        Literal["offline", "arcticdata"] | None,
        Parameter(
            help="Where the DARTS release comes from: 'offline' (the files in "
            "DATA_DIR/sources/darts) or 'arcticdata' (download missing ones from the NSF "
            "Arctic Data Center). Default: offline for --aoi sample, else arcticdata."
        ),
    ] = None,
    pattern: Annotated[
        str,
        Parameter(
            help="Release files to read: `*level2.*` (annual product) or `*level1.*` "
            "(per-image footprints, dissolved per year)."
        ),
    ] = "*level2.*",
    min_observed_fraction: Annotated[
        float,
        Parameter(
            help="Share of a cell's area a year's DARTS coverage must cover for the cell-year "
            "to count as observed; below it the cell-year's labels are NaN, not zero."
        ),
    ] = MIN_OBSERVED_FRACTION,
    refresh: Annotated[
        bool,
        Parameter(
            help="Re-read the release into DATA_DIR/darts/footprints.parquet and "
            "coverage.parquet even when they exist (read once and reused by every level).",
            negative=(),
        ),
    ] = False,
    data_dir: DataDirOption = None,
) -> None:
    """Count RTS per cell and year from the DARTS footprints (the Dagster rts_labels).

    Writes the cleaned footprints and the release's coverage layer once
    (darts/footprints.parquet and darts/coverage.parquet, the darts_polygons and
    darts_coverage assets), then per grid level the RTS count, area, density and coverage
    per cell and year, NaN where the year's coverage misses the cell
    (darts/labels_{grid_level}.zarr and .parquet). Needs the level's cells
    (`entropice grids`).

    Example: entropice labels --grid-level h3_5

    Parameters
    ----------
    grid_level, grid, level : optional
        One grid level.
    all_levels : bool
        Every default grid level.
    aoi : str
        Area of interest; chooses the default client.
    client : str, optional
        DARTS client.
    pattern : str
        Glob of the release files.
    min_observed_fraction : float
        Share of a cell a year's coverage must cover for the cell-year to count.
    refresh : bool
        Re-read the release.
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    from entropice_core.ingest import darts

    specs = _resolve_levels(grid_level, grid, level, all_levels)
    kind = _client_kind(client, aoi, "arcticdata")
    layout = _layout(data_dir)
    cells = {spec.key: _upstream(layout, "grid_cells", spec.key) for spec in specs}
    target = layout.asset_path("darts_polygons")
    coverage_target = layout.asset_path("darts_coverage")
    _writable([target, coverage_target])
    _writable([layout.asset_path("rts_labels", spec.key) for spec in specs], kind="folder")
    source: darts.DartsClient = (
        darts.OfflineDartsClient(_offline_how("arcticdata"))
        if kind == "offline"
        else darts.ArcticDataCenterDartsClient()
    )
    with _progress(steps=True) as progress:
        if refresh or not target.exists() or not coverage_target.exists():
            task = progress.add_task("DARTS footprints", total=None)
            files = source.files(layout.source("darts"), pattern)
            footprints = darts.read_darts(files, AreaOfInterest.parse(aoi))
            coverage = darts.read_coverage(source.coverage_files(layout.source("darts")))
            write_geoparquet(footprints, target)
            write_geoparquet(coverage, coverage_target)
            progress.remove_task(task)
            console.print(f"[green]wrote[/] {target}: {len(footprints):,} footprints")
            console.print(f"[green]wrote[/] {coverage_target}: {len(coverage)} years of coverage")
        else:
            footprints, coverage = read_geoparquet(target), read_geoparquet(coverage_target)

        def one(key: str, report: Callable[[str], None]) -> str:
            spec = GridSpec.from_key(key)
            cells_of_level = read_geoparquet(cells[key])
            result = darts.rts_labels(
                footprints, cells_of_level, spec, coverage, min_observed_fraction
            )
            stored = store_dataset(result, layout, "rts_labels", key)
            slumps = int(result["rts_count_all_years"].sum())
            unobserved = darts.observation_summary(result)["cell_years_unobserved"]
            return (
                f"{stored.path} and {stored.table_path}: {_describe(result)}, {slumps} slumps, "
                f"{unobserved} cell-years not observed"
            )

        _each(progress, "RTS labels", [spec.key for spec in specs], one)


era5_app = App(
    name="era5",
    help="ERA5 climate (docs/climate.md): hourly files, daily aggregates and yearly indices "
    "per Arctic year, then per-cell features per grid level. Run download, daily, yearly, "
    "features in that order.",
)
app.command(era5_app)


def _era5_years(year: list[int] | None, found: list[int], step: str, before: str) -> list[int]:
    """Return the years given, else every year the previous step has written."""
    if year:
        return sorted(set(year))
    if not found:
        raise FileNotFoundError(f"no Arctic year to {step}: run `{before}` first, or give --year")
    return found


def _stems(folder: Path, suffix: str) -> list[int]:
    return sorted(int(p.stem) for p in folder.glob(f"*{suffix}") if p.stem.isdigit())


@era5_app.command(name="download")
def era5_download(
    *,
    year: YearsOption = None,
    aoi: AoiOption = "sample",
    client: Annotated[
        Literal["offline", "cds"] | None,
        Parameter(
            help="'offline': check the files in DATA_DIR/sources/era5; 'cds': download what is "
            "absent from the Copernicus CDS (credentials: CDSAPI_URL/CDSAPI_KEY or "
            "~/.cdsapirc). Default: offline for --aoi sample, else cds."
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Bring the hourly ERA5 files of Arctic years (the Dagster era5_hourly).

    One netCDF file per month and step type under sources/era5/{year}/{month}/ (complete
    files are kept), and the year's manifest era5/hourly/{year}.json. Default years: the
    sample region's for --aoi sample; give --year otherwise.

    Example: entropice era5 download --year 2022 2023

    Parameters
    ----------
    year : list of int, optional
        Arctic years.
    aoi : str
        Area of interest (the requested box).
    client : str, optional
        ERA5 client.
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    from entropice_core.ingest import era5
    from entropice_core.sample.era5 import ARCTIC_YEARS

    area = AreaOfInterest.parse(aoi)
    kind = _client_kind(client, aoi, "cds")
    on_sample = AreaOfInterest.check_spec(aoi) == "sample"
    sample_years = list(range(ARCTIC_YEARS[0], ARCTIC_YEARS[1] + 1)) if on_sample else []
    years = _era5_years(year, sample_years, "download", "entropice era5 download --year 2023")
    layout = _layout(data_dir)
    root = layout.source("era5")
    _writable([layout.asset_path("era5_hourly", str(y)) for y in years])
    if kind != "offline":
        _writable([root], kind="folder")
    source: era5.Era5Client = (
        era5.OfflineEra5Client(_offline_how("cds"))
        if kind == "offline"
        else era5.CdsEra5Client(era5.CdsCredentials())
    )
    config = era5.Era5DownloadConfig(area=era5.cds_area(area.geometry.bounds))
    with _progress(steps=True) as progress:

        def one(key: str, report: Callable[[str], None]) -> str:
            fetched = source.fetch_year(root, int(key), config, log=console.log)
            target = write_manifest(
                era5.hourly_manifest(root, int(key)), layout.asset_path("era5_hourly", key)
            )
            return (
                f"{target}: {len(fetched.downloaded)} files downloaded, "
                f"{len(fetched.skipped)} complete, {len(fetched.missing)} absent"
            )

        _each(progress, "ERA5 hourly", [str(y) for y in years], one)


@era5_app.command(name="daily")
def era5_daily(
    *, year: YearsOption = None, aoi: AreaOption = None, data_dir: DataDirOption = None
) -> None:
    """Aggregate Arctic years of hourly ERA5 to days (the Dagster era5_daily).

    Daily mean/min/max temperature, precipitation, snowfall and snow water equivalent on the
    ERA5 grid: era5/daily/{year}.zarr. Default years: every year downloaded
    (era5/hourly/{year}.json).

    Example: entropice era5 daily --year 2022 2023

    Parameters
    ----------
    year : list of int, optional
        Arctic years.
    aoi : str, optional
        Keep only the grid points of this area.
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    from entropice_core.ingest import era5

    boxes = _boxes(aoi)
    layout = _layout(data_dir)
    root = layout.source("era5")
    found = _stems(layout.asset_path("era5_hourly", "0").parent, ".json")
    years = _era5_years(year, found, "aggregate", "entropice era5 download")
    _writable([layout.era5_daily(y) for y in years], kind="folder")
    for y in years:
        missing = era5.missing_hourly_files(root, y)
        if missing:
            raise FileNotFoundError(
                f"{missing[0]} does not exist ({len(missing)} ERA5 files of Arctic year {y} "
                f"are absent): run `entropice era5 download --year {y}` first"
            )
    with _progress(steps=True) as progress:

        def one(key: str, report: Callable[[str], None]) -> str:
            path = layout.era5_daily(key)
            gaps = era5.write_daily(root, int(key), path, log=report, boxes=boxes)
            gap_days = gaps.gap_days(era5.read_daily(path))
            if gap_days:
                console.print(f"[yellow]{len(gap_days)} days with missing hours (NaN)[/]")
            return f"{path}: {gaps.missing_hours} hours missing"

        _each(progress, "ERA5 daily", [str(y) for y in years], one)


@era5_app.command(name="yearly")
def era5_yearly(
    *, year: YearsOption = None, aoi: AreaOption = None, data_dir: DataDirOption = None
) -> None:
    """Compute the climate indices of Arctic years (the Dagster era5_yearly).

    Degree days, thaw season, snow cover, yearly, seasonal and shoulder aggregates on the
    ERA5 grid. Writes era5/yearly/{year}.zarr; the next year's daily store, where it
    exists, completes the thaw season (aggregate every year first). Default years: every
    daily store.

    Example: entropice era5 yearly --year 2022

    Parameters
    ----------
    year : list of int, optional
        Arctic years.
    aoi : str, optional
        Only the grid points of this area.
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    from entropice_core.features import climate

    boxes = _boxes(aoi)
    layout = _layout(data_dir)
    found = _stems(layout.era5_daily("0").parent, ".zarr")
    years = _era5_years(year, found, "index", "entropice era5 daily")
    _writable([layout.asset_path("era5_yearly", str(y)) for y in years], kind="folder")
    daily = {y: _upstream(layout, "era5_daily", str(y)) for y in years}
    with _progress(steps=True) as progress:

        def one(key: str, report: Callable[[str], None]) -> str:
            y = int(key)
            following = layout.era5_daily(y + 1)
            indices = climate.yearly_from_stores(daily[y], following, y, boxes=boxes)
            stored = store_dataset(indices, layout, "era5_yearly", key)
            complete = indices.attrs["thaw_season_complete"]
            return f"{stored.path}: thaw season {'complete' if complete else 'incomplete'}"

        _each(progress, "ERA5 indices", [str(y) for y in years], one)


@era5_app.command(name="features")
def era5_features(
    *,
    grid_level: GridLevelOption = None,
    grid: GridOption = None,
    level: LevelOption = None,
    all_levels: AllLevelsOption = False,
    aoi: AreaOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Average the climate indices over each cell (the Dagster climate_features).

    Area-weighted means of every year's indices per cell: era5/features_{grid_level}.zarr.
    Uses every Arctic year whose indices exist (`entropice era5 yearly`).

    Example: entropice era5 features --grid-level h3_5

    Parameters
    ----------
    grid_level, grid, level : optional
        One grid level.
    all_levels : bool
        Every default grid level.
    aoi : str, optional
        Only the cells that intersect this area.
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    from entropice_core.features import climate

    specs = _resolve_levels(grid_level, grid, level, all_levels)
    area = _area(aoi)
    layout = _layout(data_dir)
    cells = {spec.key: _upstream(layout, "grid_cells", spec.key) for spec in specs}
    _writable([layout.asset_path("climate_features", s.key) for s in specs], kind="folder")
    stores = layout.era5_yearly_stores()
    if not stores:
        folder = layout.era5_yearly("0").parent
        raise FileNotFoundError(f"{folder} holds no store: run `entropice era5 yearly` first")
    with _progress(steps=True) as progress:
        indices = climate.open_yearly(stores)

        def one(key: str, report: Callable[[str], None]) -> str:
            spec = GridSpec.from_key(key)
            frame = _cells_in(read_geoparquet(cells[key]), area, key)
            features = climate.climate_features(indices, frame, spec, parallel=True)
            stored = store_dataset(features, layout, "climate_features", key)
            return f"{stored.path}: {_describe(features)}"

        _each(progress, "climate features", [spec.key for spec in specs], one)


terrain_app = App(
    name="terrain",
    help="Terrain from ArcticDEM (docs/terrain.md): the 32 m tiles, the derivative rasters "
    "(Icechunk), then per-cell statistics per grid level. Run tiles, derivatives, features "
    "in that order.",
)
app.command(terrain_app)


@terrain_app.command(name="tiles")
def terrain_tiles(
    *,
    aoi: AoiOption = "sample",
    client: Annotated[
        Literal["offline", "pgc"] | None,
        Parameter(
            help="'offline': the tiles in DATA_DIR/sources/arcticdem; 'pgc': download missing "
            "tiles from the PGC bucket. Default: offline for --aoi sample, else pgc."
        ),
    ] = None,
    data_dir: DataDirOption = None,
) -> None:
    """Find (or download) the ArcticDEM 32 m tiles of the area (the Dagster arcticdem_tiles).

    Tiles stay under sources/arcticdem/{row}_{col}/; their manifest goes to
    arcticdem/tiles.json.

    Example: entropice terrain tiles --aoi sample

    Parameters
    ----------
    aoi : str
        Area of interest.
    client : str, optional
        ArcticDEM client.
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    from entropice_core.ingest import arcticdem

    area = AreaOfInterest.parse(aoi)
    kind = _client_kind(client, aoi, "pgc")
    layout = _layout(data_dir)
    _writable([layout.asset_path("arcticdem_tiles")])
    if kind != "offline":
        _writable([layout.source("arcticdem")], kind="folder")
    source: arcticdem.ArcticDEMClient = (
        arcticdem.OfflineArcticDEMClient(_offline_how("pgc"))
        if kind == "offline"
        else arcticdem.PgcArcticDEMClient()
    )
    with _progress() as progress:
        progress.add_task(f"ArcticDEM tiles for {area.name}", total=None)
        fetched = source.fetch(area.geometry.bounds, layout.source("arcticdem"))
        target = write_manifest(fetched.manifest(), layout.asset_path("arcticdem_tiles"))
    console.print(
        f"[green]wrote[/] {target}: {len(fetched.present)} tiles "
        f"({len(fetched.downloaded)} downloaded, {len(fetched.missing)} not in the release)"
    )


@terrain_app.command(name="derivatives")
def terrain_derivatives(
    *,
    tpi_radii_m: Annotated[
        list[float] | None,
        Parameter(help="Radii (m) of the TPI disks (default 160 960).", consume_multiple=True),
    ] = None,
    vrm_windows: Annotated[
        list[int] | None,
        Parameter(help="Odd VRM window sizes in pixels (default 3 9).", consume_multiple=True),
    ] = None,
    backend: Annotated[
        Literal["numpy", "cupy"], Parameter(help="Array backend: numpy (CPU) or cupy (CUDA).")
    ] = "numpy",
    aoi: AreaOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Compute the terrain derivative rasters of the mosaic (the Dagster terrain_derivatives).

    Slope, aspect, curvatures, TPI, TRI, roughness and VRM, water masked; one commit to the
    Icechunk repository arcticdem/derivatives.icechunk, with the pixel-sample overviews the
    per-cell statistics read. Needs the tiles' manifest (`entropice terrain tiles`) and the
    water mask (`entropice watermask`).

    Example: entropice terrain derivatives --tpi-radii-m 160 960

    Parameters
    ----------
    tpi_radii_m : list of float, optional
        TPI radii.
    vrm_windows : list of int, optional
        VRM windows.
    backend : str
        Array backend.
    aoi : str, optional
        Only the tiles that cover this area.
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    from entropice_core.ingest.arcticdem import terrain_rasters, tile_rowcol, tiles_for
    from entropice_core.terrain.derivatives import TerrainConfig
    from entropice_core.terrain.overviews import STRIDES

    options = {"tpi_radii_m": tpi_radii_m, "vrm_windows": vrm_windows, "backend": backend}
    config = TerrainConfig.model_validate({k: v for k, v in options.items() if v is not None})
    area = _area(aoi)
    layout = _layout(data_dir)
    manifest = read_manifest(_upstream(layout, "arcticdem_tiles"))
    water = _upstream(layout, "watermask")
    _writable([layout.asset_path("terrain_derivatives")], kind="folder")
    tiles = list(manifest["tiles"])
    if area is not None:
        covering = {rowcol for part in area.parts for rowcol in tiles_for(part.bounds)}
        tiles = [tile for tile in tiles if tile_rowcol(Path(tile)) in covering]
        if not tiles:
            raise ValueError(
                f"no tile of {layout.asset_path('arcticdem_tiles')} covers --aoi {area.name!r}:"
                " run `entropice terrain tiles --aoi ...` for that area first"
            )
    absent = [tile for tile in tiles if not Path(tile).exists()]
    if absent:
        raise FileNotFoundError(f"{absent[0]} does not exist: run `entropice terrain tiles` again")
    with _progress() as progress:
        progress.add_task(f"terrain derivatives of {len(tiles)} tiles", total=None)
        rasters = terrain_rasters(tiles, read_geoparquet(water), config)
        stored = store_dataset(
            rasters, layout, "terrain_derivatives", overview_strides=tuple(STRIDES)
        )
    console.print(f"[green]wrote[/] {stored.path}: snapshot {stored.snapshot_id}")


@terrain_app.command(name="features")
def terrain_features(
    *,
    grid_level: GridLevelOption = None,
    grid: GridOption = None,
    level: LevelOption = None,
    all_levels: AllLevelsOption = False,
    min_pixels_per_cell: Annotated[
        int,
        Parameter(
            help="0 (default): every pixel, exact, all the chosen levels in one pass over the "
            "rasters. Above 0: sample every k-th pixel so that a median cell keeps at least "
            "this many (e.g. 2500), level by level, with the expected error in the attrs."
        ),
    ] = 0,
    aoi: AreaOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Summarise elevation and each derivative per cell (the Dagster terrain_features).

    Writes arcticdem/features_{grid_level}.zarr, exact (every pixel) by default, the chosen
    levels in one pass. Reads the head of arcticdem/derivatives.icechunk (`entropice terrain
    derivatives`) and records its snapshot id in the dataset's attrs.

    Example: entropice terrain features --all-levels

    Parameters
    ----------
    grid_level, grid, level : optional
        One grid level.
    all_levels : bool
        Every default grid level.
    min_pixels_per_cell : int, optional
        Pixel sample size of a median cell; 0 (default) every pixel.
    aoi : str, optional
        Only the cells that intersect this area.
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    import xarray as xr

    from entropice_core.features import terrain
    from entropice_core.io.assets import load_dataset

    specs = _resolve_levels(grid_level, grid, level, all_levels)
    if min_pixels_per_cell < 0:
        raise ValueError(f"--min-pixels-per-cell must be 0 or more, got {min_pixels_per_cell}")
    area = _area(aoi)
    layout = _layout(data_dir)
    cells = {spec.key: _upstream(layout, "grid_cells", spec.key) for spec in specs}
    _upstream(layout, "terrain_derivatives")
    _writable([layout.asset_path("terrain_features", s.key) for s in specs], kind="folder")
    derivatives = load_dataset(layout, "terrain_derivatives")
    assert isinstance(derivatives, xr.DataTree)  # an unpartitioned raster loads as a tree
    frames = {k: _cells_in(read_geoparquet(path), area, k) for k, path in cells.items()}
    with _progress() as progress:
        how = "one pass" if min_pixels_per_cell == 0 else "sampled"
        progress.add_task(f"terrain features of {len(frames)} levels ({how})", total=None)
        found = terrain.derivative_features_levels(
            derivatives, frames, min_pixels_per_cell, parallel=True
        )
    with _progress(steps=True) as progress:

        def one(key: str, report: Callable[[str], None]) -> str:
            stored = store_dataset(found[key], layout, "terrain_features", key)
            return f"{stored.path}: {_describe(found[key])}"

        _each(progress, "terrain features", [spec.key for spec in specs], one)


@app.command
def dataset(
    *,
    grid_level: GridLevelOption = None,
    grid: GridOption = None,
    level: LevelOption = None,
    all_levels: AllLevelsOption = False,
    config: Annotated[
        Path | None,
        Parameter(
            help="Dataset config (default: dataset.toml in $ENTROPICE_CONFIG_DIR or the "
            "packaged configs, as Dagster uses)."
        ),
    ] = None,
    aoi: AreaOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Join the features and labels of a grid level (the Dagster training_dataset).

    The L2 datasets the config names joined onto the RTS labels, with the spatially blocked
    split. Writes datasets/{grid_level}.zarr. Needs the labels and every source of the config for
    the level (`entropice labels`, `entropice era5 features`, `entropice terrain features`,
    `entropice alphaearth`).

    Example: entropice dataset --grid-level h3_5

    Parameters
    ----------
    grid_level, grid, level : optional
        One grid level.
    all_levels : bool
        Every default grid level.
    config : Path, optional
        Dataset config.
    aoi : str, optional
        Only the cells that intersect this area (the spatial split is drawn among them).
    data_dir : Path, optional
        Root of the storage hierarchy.
    """
    import numpy as np

    from entropice_core.config import config_dir_from_env
    from entropice_core.io.assets import load_dataset
    from entropice_core.ml.dataset import DatasetEnsemble

    specs = _resolve_levels(grid_level, grid, level, all_levels)
    ensemble = DatasetEnsemble.from_toml(config or config_dir_from_env() / "dataset.toml")
    area = _area(aoi)
    layout = _layout(data_dir)
    for spec in specs:
        for asset in ensemble.assets() + (["grid_cells"] if area is not None else []):
            _upstream(layout, asset, spec.key)
    _writable([layout.asset_path("training_dataset", s.key) for s in specs], kind="folder")
    with _progress(steps=True) as progress:

        def one(key: str, report: Callable[[str], None]) -> str:
            inputs = {asset: load_dataset(layout, asset, key) for asset in ensemble.assets()}
            if area is not None:
                frame = read_geoparquet(layout.asset_path("grid_cells", key))
                ids = _cells_in(frame, area, key)["cell_id"].to_numpy()
                inputs = {
                    asset: values.isel(cell_ids=np.isin(values["cell_ids"].to_numpy(), ids))
                    for asset, values in inputs.items()
                }
            data = ensemble.build_from(inputs)  # type: ignore[arg-type]  # L2: datasets
            stored = store_dataset(data.dataset, layout, "training_dataset", key)
            return f"{stored.path}: {data.summary()}"

        _each(progress, "training dataset", [spec.key for spec in specs], one)


def main(tokens: Sequence[str] | None = None) -> None:
    """Run the app (the entry point), turning known errors into one readable line.

    Parameters
    ----------
    tokens : sequence of str, optional
        The arguments (default: the command line).
    """
    try:
        app(tokens)
    except ValidationError as err:
        messages = (e["msg"].removeprefix("Value error, ") for e in err.errors())
        console.print(f"[red]error:[/] {'; '.join(messages)}", soft_wrap=True)
        raise SystemExit(2) from err
    except (ValueError, FileNotFoundError, ImportError) as err:
        console.print(f"[red]error:[/] {err}", soft_wrap=True)
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
