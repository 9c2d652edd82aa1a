"""Resources: where data lives, which area to cover, and how the grids and water mask are built.

Defaults and field descriptions come from the core pydantic models, so the Dagster UI shows the
same documentation as the library and the two cannot drift apart.
"""

from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from entropice_core.config import AreaOfInterest, GridCellsConfig, WatermaskConfig
from entropice_core.ingest.darts import find_darts_files

_GRID = GridCellsConfig()
_WATER = WatermaskConfig()


def _describe(model: type, field: str) -> str:
    return model.model_fields[field].description


class DataDirResource(dg.ConfigurableResource):
    """Root of the storage hierarchy (ENTROPICE_DATA_DIR); layout in architecture.md."""

    path: str = Field(
        description="Directory holding sources/, watermask/, grids/, ... (ENTROPICE_DATA_DIR)."
    )

    @property
    def root(self) -> Path:
        return Path(self.path)


class AreaOfInterestResource(dg.ConfigurableResource):
    """The area every asset covers, as one text spec so it fits an env var or the launchpad."""

    aoi: str = Field(
        default="sample",
        description="'sample' (the embedded sample region), 'arctic' (north of 50N), "
        "'north-of:LAT', a bbox 'minlon,minlat,maxlon,maxlat' (minlon > maxlon crosses 180) "
        "or the path of a vector file (GeoParquet, GeoPackage, GeoJSON, ...).",
    )

    def area(self) -> AreaOfInterest:
        """Parse the spec; a bad spec fails here with the core's explanation."""
        return AreaOfInterest.parse(self.aoi)


class GridCellsResource(dg.ConfigurableResource):
    """How grid cells are built (maps onto ``GridCellsConfig``)."""

    min_land_fraction: float = Field(
        default=_GRID.min_land_fraction,
        description=_describe(GridCellsConfig, "min_land_fraction"),
    )
    mask_resolution_deg: float = Field(
        default=_GRID.mask_resolution_deg,
        description=_describe(GridCellsConfig, "mask_resolution_deg"),
    )

    def config(self) -> GridCellsConfig:
        return GridCellsConfig(
            min_land_fraction=self.min_land_fraction,
            mask_resolution_deg=self.mask_resolution_deg,
        )


class WatermaskResource(dg.ConfigurableResource):
    """Where water polygons come from (maps onto ``WatermaskConfig``)."""

    source: Literal["global-land-mask", "file"] = Field(
        default=_WATER.source,
        description="'global-land-mask' (offline 1 km land mask) or 'file' (polygons at `path`).",
    )
    path: str | None = Field(default=None, description=_describe(WatermaskConfig, "path"))
    tile_deg: float = Field(
        default=_WATER.tile_deg, description=_describe(WatermaskConfig, "tile_deg")
    )

    def config(self) -> WatermaskConfig:
        return WatermaskConfig(source=self.source, path=self.path, tile_deg=self.tile_deg)


class DartsSourceResource(dg.ConfigurableResource):
    """Where the DARTS release lies: a folder of GeoPackage/GeoParquet files.

    Empty ``folder`` means ``DATA_DIR/sources/darts``, where the sample region writes its
    DARTS-schema files; for real runs download the release (NSF Arctic Data Center,
    doi:10.18739/A22B8VD7C) and point ``folder`` at it.
    """

    folder: str = Field(
        default="", description="Folder with the DARTS files (default DATA_DIR/sources/darts)."
    )
    pattern: str = Field(
        default="*level2.*",
        description="Glob of the files to read: '*level2.*' for the annual product, "
        "'*level1.*' for per-image footprints (dissolved per year).",
    )

    def files(self, data_dir: Path) -> list[Path]:
        folder = Path(self.folder) if self.folder else data_dir / "sources" / "darts"
        return find_darts_files(folder, self.pattern)
