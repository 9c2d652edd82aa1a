"""Grid stage: the water mask and, per grid_level partition, the land cells of the area."""

import dagster as dg

from entropice_dagster.automation import ON_UPDATED_INPUTS
from entropice_dagster.checks import (
    GRID_CELLS_CHECKS,
    WATERMASK_CHECKS,
    check_results,
    check_specs,
    checked_output,
)
from entropice_dagster.io_managers import GEOPARQUET_IO_MANAGER_KEY
from entropice_dagster.metadata import OWNERS, frame_summary, png_markdown, stored_at
from entropice_dagster.partitions import grid_partitions
from entropice_dagster.resources import (
    AreaOfInterestResource,
    GridSettingsResource,
    WatermaskSourceResource,
)


@dg.asset(
    owners=OWNERS,
    tags={"tier": "source"},
    group_name="grids",
    kinds={"geoparquet"},
    code_version="1",
    io_manager_key=GEOPARQUET_IO_MANAGER_KEY,
    metadata=stored_at("watermask"),
    check_specs=check_specs("watermask", *WATERMASK_CHECKS),
)
def watermask(area_of_interest: AreaOfInterestResource, watermask_source: WatermaskSourceResource):
    """Water polygons (EPSG:4326) over the area of interest, cut into tiles.

    Built once and shared by every grid level, so all levels agree on where the coast is.
    """
    from entropice_core.spatial.watermask import water_polygons

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
    owners=OWNERS,
    tags={"tier": "per-cell"},
    group_name="grids",
    kinds={"geoparquet"},
    code_version="1",
    partitions_def=grid_partitions,
    io_manager_key=GEOPARQUET_IO_MANAGER_KEY,
    metadata=stored_at("grid_cells"),
    check_specs=check_specs("grid_cells", *GRID_CELLS_CHECKS, partitions_def=grid_partitions),
    automation_condition=ON_UPDATED_INPUTS,
)
def grid_cells(
    context: dg.AssetExecutionContext,
    watermask,
    area_of_interest: AreaOfInterestResource,
    grid_settings: GridSettingsResource,
):
    """Cells of one grid level over the area of interest: cell_id, geometry, land area, fraction.

    Ocean-only cells are dropped. Every per-cell feature, label and prediction is indexed by
    these cell ids, one partition per grid level. The land-fraction map is metadata only.
    """
    from entropice_core.config import GridSpec
    from entropice_core.plots import land_fraction_png
    from entropice_core.spatial import grids

    spec, aoi = GridSpec.from_key(context.partition_key), area_of_interest.area()
    cells = grids.grid_cells(
        spec, aoi, watermask, grid_settings.config(), progress=context.log.info
    )
    title = f"{spec.key}: land fraction"
    metadata = {
        "grid": spec.grid,
        "level": spec.level,
        "area_of_interest": aoi.name,
        "land_area_km2": round(float(cells["land_area_km2"].sum()), 1),
        "map_preview": png_markdown(land_fraction_png(cells, title), title),
        **frame_summary(cells),
    }
    yield from checked_output(cells, metadata, check_results(cells, GRID_CELLS_CHECKS))
