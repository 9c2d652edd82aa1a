"""The ``entropice`` command line: build grids and watermasks, train and predict, run the demo.

Every command that writes takes ``--data-dir`` (default: ``$ENTROPICE_DATA_DIR`` or ``./data``)
and follows the storage layout (``entropice_core.layout``: ``grids/{grid_level}.parquet``, ...).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

from cyclopts import App, Parameter
from pydantic import ValidationError
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
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
from entropice_core.io.geoparquet import read_geoparquet, write_geoparquet
from entropice_core.layout import Layout
from entropice_core.spatial.grids import grid_cells
from entropice_core.spatial.watermask import water_polygons

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
DataDirOption = Annotated[
    Path | None,
    Parameter(help="Root of the storage hierarchy (default: $ENTROPICE_DATA_DIR or ./data)."),
]


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
    )


def _resolve_grid(grid_level: str | None, grid: str | None, level: int | None) -> GridSpec:
    if grid_level is not None:
        return GridSpec.from_key(grid_level)
    if grid is None or level is None:
        raise ValueError("give --grid-level h3_5, or both --grid and --level")
    return GridSpec.from_key(f"{grid}_{level}")


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
    with _progress() as progress:
        progress.add_task(f"water polygons for {area.name}", total=None)
        water = water_polygons(area, _watermask_config(water_file))
        write_geoparquet(water, target)
    console.print(f"[green]wrote[/] {target} ({len(water)} tiles)")


@app.command
def grids(
    *,
    grid_level: Annotated[
        str | None, Parameter(help="Grid and level as one key, e.g. h3_5 or healpix_8.")
    ] = None,
    grid: Annotated[str | None, Parameter(help="Grid system: h3 or healpix.")] = None,
    level: Annotated[
        int | None, Parameter(help="Grid level (H3 resolution 0-15, HEALPix order 0-29).")
    ] = None,
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
    spec = _resolve_grid(grid_level, grid, level)
    area = AreaOfInterest.parse(aoi)
    target = out or _layout(data_dir).grid_cells(spec.key)
    start = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"water polygons for {area.name}", total=None)
        water = water_polygons(area, _watermask_config(water_file))
        cells = grid_cells(
            spec,
            area,
            water,
            GridCellsConfig(min_land_fraction=min_land_fraction),
            progress=lambda message: progress.update(task, description=message),
        )
        progress.update(task, description=f"writing {target}")
        write_geoparquet(cells, target)
    console.print(
        f"[green]wrote[/] {target}: {len(cells):,} {spec.key} cells, "
        f"{cells.land_area_km2.sum():,.0f} km2 of land, {time.perf_counter() - start:.1f} s"
    )


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
    env = {**os.environ, "ENTROPICE_DATA_DIR": str(root), "ENTROPICE_AOI": "sample"}
    result = subprocess.run([sys.executable, "-m", "entropice_dagster.demo"], env=env, check=False)
    if result.returncode != 0:
        raise SystemExit(result.returncode)


def _layout(data_dir: Path | None) -> Layout:
    """Return the storage layout under --data-dir (default $ENTROPICE_DATA_DIR or ./data)."""
    return Layout(data_dir or Settings.from_env().data_dir)


@app.command
def train(
    *,
    config: Annotated[Path, Parameter(help="Experiment file, e.g. configs/espa-binary.toml.")],
    grid_level: Annotated[str, Parameter(help="Grid level to train on, e.g. h3_5.")],
    n_iter: Annotated[
        int | None, Parameter(help="Search candidates (default: the config's search.n_iter).")
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
    data_dir : Path, optional
        Root of the storage hierarchy.
    out : Path, optional
        Output folder instead of the layout's place.
    """
    from entropice_core.ml.training import ExperimentConfig, save_experiment, train_experiment

    experiment = ExperimentConfig.from_toml(config)
    if n_iter is not None:
        search = experiment.search.model_copy(update={"n_iter": n_iter})
        experiment = experiment.model_copy(update={"search": search})
    layout = _layout(data_dir)
    key = GridSpec.from_key(grid_level).key
    target = out or layout.experiment(key, experiment.name)
    with _progress() as progress:
        task = progress.add_task(f"{grid_level}: reading the datasets", total=None)
        data = experiment.dataset.open(layout.root, key)
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
    folder = layout.experiment(key, experiment)
    model, stamp = load_model(folder)
    resolved = ExperimentConfig.from_toml(folder / RESOLVED_CONFIG)
    cells = read_geoparquet(layout.grid_cells(key))
    with _progress() as progress:
        task = progress.add_task(f"{experiment} on {key}", total=None)
        data = resolved.dataset.open(layout.root, key)
        frame = predict_cells(
            model,
            data.dataset,
            cells,
            stamp["classes"],
            stamp["feature_names"],
            batch_size=batch_size,
            device=stamp.get("predict_device", "cpu"),
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
    grid_level: Annotated[
        str | None, Parameter(help="Grid and level as one key, e.g. h3_5 or healpix_8.")
    ] = None,
    grid: Annotated[str | None, Parameter(help="Grid system: h3 or healpix.")] = None,
    level: Annotated[int | None, Parameter(help="Grid level (with --grid).")] = None,
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
            help="Per-cluster answers, reused by later runs (default: "
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
    """Per-cell AlphaEarth satellite embeddings of one grid level (see docs/alphaearth.md).

    Reads the level's cells (DATA_DIR/grids/{grid_level}.parquet: run `entropice grids`
    first), groups them into KMeans clusters (one request each per year), answers each from the
    cache or the source, and writes an xdggs Zarr store with dims (cell_ids, year): A00..A63
    (cell means of the 64-dimensional embeddings) and valid_fraction. A year fetched before
    costs no request. Data: CC-BY 4.0, "The AlphaEarth Foundations Satellite Embedding dataset
    is produced by Google and Google DeepMind."

    Example: entropice alphaearth --grid-level h3_5 --year 2020 --year 2021
    """
    from entropice_core.config import EarthEngineCredentials
    from entropice_core.features.alphaearth import alphaearth_features, feature_summary
    from entropice_core.ingest import alphaearth as ae
    from entropice_core.io.zarr import write_dataset

    spec = _resolve_grid(grid_level, grid, level)
    layout = _layout(data_dir)
    cells_path = layout.grid_cells(spec.key)
    if not cells_path.exists():
        raise FileNotFoundError(
            f"{cells_path} does not exist: build the cells first with "
            f"`entropice grids --grid-level {spec.key}`"
        )
    cogs = cog_dir or layout.source("alphaearth")
    cache = ae.ClusterCache(cache_dir or layout.source("alphaearth") / "requests" / source)
    client: ae.EmbeddingClient
    if source == "cogs":
        client = ae.CogClient(cogs, cache=cache)
        years = year or (ae.years_available(cogs) if cogs.is_dir() else [])
        if not years:
            raise FileNotFoundError(
                f"no AlphaEarth year folders under {cogs}: run `entropice demo` (the sample "
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
    target = out or layout.asset_path("alphaearth_features", spec.key)
    with _progress() as progress:
        progress.add_task(f"AlphaEarth {spec.key} {', '.join(map(str, years))}", total=None)
        result = alphaearth_features(client, read_geoparquet(cells_path), spec, years)
        write_dataset(result.dataset, target)
    info = feature_summary(result)
    console.print(
        f"[green]wrote[/] {target}: {info['cells']:,} cells x {len(info['years'])} years, "
        f"{info['requests']} requests, {info['requests_from_cache']} from cache"
    )


def main() -> None:
    """Run the app (the entry point), turning known errors into one readable line."""
    try:
        app()
    except ValidationError as err:
        messages = (e["msg"].removeprefix("Value error, ") for e in err.errors())
        console.print(f"[red]error:[/] {'; '.join(messages)}")
        raise SystemExit(2) from err
    except (ValueError, FileNotFoundError, ImportError) as err:
        console.print(f"[red]error:[/] {err}")
        raise SystemExit(2) from err


if __name__ == "__main__":
    main()
