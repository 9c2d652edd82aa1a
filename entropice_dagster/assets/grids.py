"""Grid stage: the water mask and, per grid_level partition, the land cells of the area."""

import base64
import io
from pathlib import Path

import dagster as dg
import geopandas as gpd
from matplotlib.figure import Figure

from entropice_core.config import GridSpec
from entropice_core.io.atomic import atomic_path
from entropice_core.spatial import grids
from entropice_core.spatial.watermask import water_polygons
from entropice_dagster.checks import (
    GRID_CELLS_CHECKS,
    WATERMASK_CHECKS,
    check_results,
    check_specs,
    checked_output,
)
from entropice_dagster.io_managers import GEOPARQUET_IO_MANAGER_KEY
from entropice_dagster.metadata import frame_summary
from entropice_dagster.partitions import grid_partitions
from entropice_dagster.resources import (
    AreaOfInterestResource,
    DataDirResource,
    GridSettingsResource,
    WatermaskSourceResource,
)

MAP_MAX_POLYGONS = 50_000


def _land_fraction_map(cells: gpd.GeoDataFrame, path: Path, title: str) -> dg.MetadataValue:
    """Write a small PNG of the cells coloured by land fraction; return it as inline markdown.

    Arctic-wide levels have about a million cells: those are drawn as points, which stays cheap.
    """
    style = {"linewidth": 0.2, "edgecolor": "grey"}
    if len(cells) > MAP_MAX_POLYGONS:
        cells = cells.set_geometry(cells.representative_point())
        style = {"markersize": 1, "linewidth": 0}
    figure = Figure(figsize=(4.5, 4), dpi=80, layout="constrained")
    ax = figure.subplots()
    cells.plot(column="land_fraction", ax=ax, vmin=0, vmax=1, cmap="YlGn", legend=True, **style)
    ax.set_title(title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![land fraction](data:image/png;base64,{encoded})")


@dg.asset(
    group_name="grids",
    kinds={"geoparquet"},
    code_version="1",
    io_manager_key=GEOPARQUET_IO_MANAGER_KEY,
    metadata={"entropice/path": "watermask/watermask.parquet"},
    check_specs=check_specs("watermask", WATERMASK_CHECKS),
)
def watermask(area_of_interest: AreaOfInterestResource, watermask_source: WatermaskSourceResource):
    """Water polygons (EPSG:4326) over the area of interest, cut into tiles.

    Built once and shared by every grid level, so all levels agree on where the coast is.
    """
    config = watermask_source.config()
    water = water_polygons(area_of_interest.area(), config)
    yield from checked_output(
        water,
        {
            "source": config.source,
            "tiles": len(water),
            "tiles_with_water": int((~water.geometry.is_empty).sum()),
            **frame_summary(water),
        },
        check_results(water, WATERMASK_CHECKS),
    )


@dg.asset(
    group_name="grids",
    kinds={"geoparquet"},
    code_version="1",
    partitions_def=grid_partitions,
    io_manager_key=GEOPARQUET_IO_MANAGER_KEY,
    metadata={"entropice/path": "grids/{partition_key}.parquet"},
    check_specs=check_specs("grid_cells", GRID_CELLS_CHECKS),
)
def grid_cells(
    context: dg.AssetExecutionContext,
    watermask: gpd.GeoDataFrame,
    area_of_interest: AreaOfInterestResource,
    grid_settings: GridSettingsResource,
    data_dir: DataDirResource,
):
    """Cells of one grid level over the area of interest: cell_id, geometry, land area, fraction.

    Ocean-only cells are dropped. Every per-cell feature, label and prediction is indexed by
    these cell ids, one partition per grid level.
    """
    spec = GridSpec.from_key(context.partition_key)
    aoi = area_of_interest.area()
    cells = grids.grid_cells(
        spec, aoi, watermask, grid_settings.config(), progress=context.log.info
    )
    results = check_results(cells, GRID_CELLS_CHECKS)
    metadata = {
        "grid": spec.grid,
        "level": spec.level,
        "area_of_interest": aoi.name,
        "land_area_km2": round(float(cells["land_area_km2"].sum()), 1),
        **frame_summary(cells),
    }
    if all(r.passed for r in results):  # a failed run writes nothing, the map included
        map_path = data_dir.root / "grids" / f"{spec.key}.png"
        metadata["map"] = dg.MetadataValue.path(str(map_path))
        metadata["map_preview"] = _land_fraction_map(cells, map_path, f"{spec.key}: land fraction")
    yield from checked_output(cells, metadata, results)
