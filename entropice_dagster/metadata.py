"""Metadata every materialisation shows in the UI."""

import dagster as dg
import geopandas as gpd


def frame_summary(frame: gpd.GeoDataFrame) -> dict[str, object]:
    """Bounding box and the first rows of a GeoDataFrame."""
    return {
        "bbox": [round(float(v), 4) for v in frame.total_bounds],
        "preview": dg.MetadataValue.md(frame.head(10).drop(columns="geometry").to_markdown()),
    }
