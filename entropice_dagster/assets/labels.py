"""Label stage: DARTS footprints as released, and RTS metrics per grid cell and year."""

import dagster as dg
from pydantic import Field

from entropice_core.ingest.darts import MIN_OBSERVED_FRACTION
from entropice_dagster.automation import ON_UPDATED_INPUTS
from entropice_dagster.checks import (
    check_specs,
    checked_output,
    footprints_plausible,
    rts_area_matches_footprints,
)
from entropice_dagster.io_managers import GEOPARQUET_IO_MANAGER_KEY, ZARR_IO_MANAGER_KEY
from entropice_dagster.metadata import OWNERS, cell_map, frame_summary, stored_at
from entropice_dagster.partitions import grid_partitions
from entropice_dagster.resources import (
    AreaOfInterestResource,
    DartsSourceResource,
    DataDirResource,
)


@dg.asset(
    owners=OWNERS,
    tags={"tier": "source"},
    group_name="labels",
    kinds={"geoparquet"},
    code_version="2",
    io_manager_key=GEOPARQUET_IO_MANAGER_KEY,
    metadata=stored_at("darts_polygons"),
    check_specs=check_specs("darts_polygons", footprints_plausible),
)
def darts_polygons(
    context: dg.AssetExecutionContext,
    darts_source: DartsSourceResource,
    area_of_interest: AreaOfInterestResource,
    data_dir: DataDirResource,
):
    """RTS footprints from the DARTS release: one polygon per slump and year, EPSG:4326.

    Read from the files as published (level-2, level-1 or training labels), with invalid
    geometries repaired, areas recomputed on the WGS84 ellipsoid and years validated. Files
    of points or lines, coordinates that do not fit their CRS and releases with no footprint
    in the area of interest are refused.
    """
    from entropice_core.ingest import darts

    files = darts_source.files(data_dir.root)
    context.log.info(f"reading {len(files)} DARTS files: {[f.name for f in files]}")
    footprints = darts.read_darts(files, area_of_interest.area())
    metadata = {
        "files": [str(f) for f in files],
        "footprints": len(footprints),
        "years": sorted(int(y) for y in footprints["year"].unique()),
        "repaired_geometries": footprints.attrs["repaired"],
        "dropped_features": footprints.attrs["dropped"],
        "total_area_km2": round(float(footprints["area_m2"].sum() / 1e6), 3),
        **frame_summary(footprints),
    }
    yield from checked_output(footprints, metadata, [footprints_plausible(footprints)])


@dg.asset(
    owners=OWNERS,
    tags={"tier": "source"},
    group_name="labels",
    kinds={"geoparquet"},
    code_version="1",
    io_manager_key=GEOPARQUET_IO_MANAGER_KEY,
    metadata=stored_at("darts_coverage"),
)
def darts_coverage(
    context: dg.AssetExecutionContext, darts_source: DartsSourceResource, data_dir: DataDirResource
):
    """Area DARTS imaged per year (the release's coverage layer), one polygon per year.

    A cell-year outside it is not observed: its RTS labels are missing, not zero. A release
    without a coverage layer gives an empty frame, and every cell counts as observed.
    """
    from entropice_core.ingest import darts

    files = darts_source.coverage_files(data_dir.root)
    context.log.info(f"reading {len(files)} DARTS coverage files: {[f.name for f in files]}")
    coverage = darts.read_coverage(files)
    metadata = {
        "files": [str(f) for f in files],
        "years": coverage["year"].astype(int).tolist(),
        "observed_area_km2": {
            str(y): round(a, 3) for y, a in darts.observed_area_km2(coverage).items()
        },
        "repaired_geometries": coverage.attrs["repaired"],
        "dropped_features": coverage.attrs["dropped"],
        "coverage": "DARTS coverage layer"
        if files
        else "no coverage layer: every cell counts as observed",
    }
    return dg.Output(coverage, metadata=metadata)


class RtsLabelsConfig(dg.Config):
    """When a cell-year counts as observed (maps onto ``rts_labels``' argument)."""

    min_observed_fraction: float = Field(
        default=MIN_OBSERVED_FRACTION,
        gt=0,
        le=1,
        description="Share of a cell's area that a year's DARTS coverage must cover for the "
        "cell-year to count as observed; below it the cell-year's labels are NaN, not zero.",
    )


@dg.asset(
    owners=OWNERS,
    tags={"tier": "per-cell"},
    group_name="labels",
    kinds={"zarr", "parquet"},
    code_version="2",
    partitions_def=grid_partitions,
    io_manager_key=ZARR_IO_MANAGER_KEY,
    metadata=stored_at("rts_labels"),
    check_specs=check_specs(
        "rts_labels", rts_area_matches_footprints, partitions_def=grid_partitions
    ),
    automation_condition=ON_UPDATED_INPUTS,
)
def rts_labels(
    context: dg.AssetExecutionContext,
    config: RtsLabelsConfig,
    darts_polygons,
    darts_coverage,
    grid_cells,
):
    """RTS count, area, density (per 1000 km2 of land) and coverage per cell and year.

    Plus all-years aggregates in which a slump seen in several years counts once. A cell-year
    the DARTS coverage does not cover (observed_fraction below min_observed_fraction) is NaN,
    not zero; observed cells without RTS are zero: the negatives that training needs.
    """
    from entropice_core.config import GridSpec
    from entropice_core.ingest import darts

    spec = GridSpec.from_key(context.partition_key)
    threshold = config.min_observed_fraction
    labels = darts.rts_labels(darts_polygons, grid_cells, spec, darts_coverage, threshold)
    observed = labels["observed_fraction"] >= threshold
    expected = darts.footprint_area_in_cells_km2(darts_polygons, grid_cells, observed)
    metadata = {
        "cells": labels.sizes["cell_ids"],
        "cells_with_rts": int((labels["rts_count_all_years"] > 0).sum()),
        "slumps": int(labels["rts_count_all_years"].sum()),
        "rts_area_km2": round(float(labels["rts_area_km2"].sum()), 4),
        "years": labels["year"].to_numpy().tolist(),
        **darts.observation_summary(labels),
        "map": cell_map(grid_cells, labels["rts_density_all_years"], "RTS per 1000 km², all years"),
    }
    yield from checked_output(labels, metadata, [rts_area_matches_footprints(labels, expected)])
