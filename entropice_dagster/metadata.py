"""Metadata every materialisation shows in the UI."""

import base64
from typing import Any

import dagster as dg

#: Who answers for every asset (a Dagster owner: a team or an e-mail), filterable in the UI.
OWNERS = ["team:entropice"]


def frame_summary(frame: Any) -> dict[str, object]:
    """Bounding box and the first rows of a GeoDataFrame."""
    return {
        "bbox": [round(float(v), 4) for v in frame.total_bounds],
        "preview": dg.MetadataValue.md(frame.head(10).drop(columns="geometry").to_markdown()),
    }


def png_markdown(png: bytes, title: str) -> dg.MetadataValue:
    """A PNG inline in markdown metadata (the UI shows it; nothing is written to disk)."""
    encoded = base64.b64encode(png).decode()
    return dg.MetadataValue.md(f"![{title}](data:image/png;base64,{encoded})")


def markdown_table(frame: Any, digits: int = 4) -> dg.MetadataValue:
    """A pandas frame as a markdown table, rounded."""
    return dg.MetadataValue.md(frame.round(digits).to_markdown())


def stored_at(asset: str) -> dict[str, str]:
    """The asset's path template in the storage layout, shown in the UI's definition metadata
    (the IO managers take the path from ``entropice_core.layout`` itself)."""
    from entropice_core.layout import ASSET_PATHS

    return {"entropice/path": ASSET_PATHS[asset]}


def dashboard_url(page: str, partition_key: Any = None) -> dg.MetadataValue:
    """The dashboard page that shows the asset (``make dashboard``), preselecting the
    partition's grid level and experiment through the page's query parameters."""
    from entropice_dashboard import page_url

    keys = getattr(partition_key, "keys_by_dimension", None) or {}
    return dg.MetadataValue.url(page_url(page, **keys))
