"""Water polygons for an area of interest (IMPLEMENTATION IN PROGRESS)."""

from __future__ import annotations

import geopandas as gpd

from entropice_core.config import AreaOfInterest, WatermaskConfig


def water_polygons(aoi: AreaOfInterest, config: WatermaskConfig = WatermaskConfig()) -> gpd.GeoDataFrame:
    """Water polygons (EPSG:4326) covering ``aoi``: columns geometry, tile, source."""
    raise NotImplementedError
