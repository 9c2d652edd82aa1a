"""H3 and HEALPix grid cells over an area of interest (IMPLEMENTATION IN PROGRESS)."""

from __future__ import annotations

import geopandas as gpd

from entropice_core.config import AreaOfInterest, GridCellsConfig, GridSpec


def grid_cells(
    spec: GridSpec,
    aoi: AreaOfInterest,
    water: gpd.GeoDataFrame,
    config: GridCellsConfig = GridCellsConfig(),
) -> gpd.GeoDataFrame:
    """Cells of ``spec`` whose centre lies in ``aoi``, with land area; ocean-only cells dropped.

    Returns columns cell_id (uint64), geometry (EPSG:4326), land_area_km2, land_fraction;
    ``frame.attrs`` holds the grid spec (``grid``, ``level``).
    """
    raise NotImplementedError
