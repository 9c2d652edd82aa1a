"""Asset checks computed inside the assets from the frame they just built.

Checks run in the asset's own step (``check_specs``) rather than as separate ``@asset_check``s,
which would load every partition again. They are blocking: a grid with duplicate ids, broken
geometries or impossible land fractions would poison every per-cell asset downstream.
"""

from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import geopandas as gpd
import numpy as np


def _geometry_check(name: str, frame: gpd.GeoDataFrame, allow_empty: bool) -> dg.AssetCheckResult:
    geometry = frame.geometry
    bad = geometry.isna() | ~geometry.is_valid
    if not allow_empty:
        bad |= geometry.is_empty
    epsg = frame.crs.to_epsg() if frame.crs is not None else None
    return dg.AssetCheckResult(
        check_name=name,
        passed=not bad.any() and epsg == 4326,
        metadata={"invalid_geometries": int(bad.sum()), "crs": str(frame.crs)},
    )


def polygons_valid(frame: gpd.GeoDataFrame) -> dg.AssetCheckResult:
    """Water polygons are present, valid (OGC) and in EPSG:4326; a tile without water is empty."""
    return _geometry_check("polygons_valid", frame, allow_empty=True)


def geometries_valid(frame: gpd.GeoDataFrame) -> dg.AssetCheckResult:
    """Geometries are present, non-empty, valid (OGC) and in EPSG:4326."""
    return _geometry_check("geometries_valid", frame, allow_empty=False)


def cell_ids_unique(frame: gpd.GeoDataFrame) -> dg.AssetCheckResult:
    """Every cell_id appears once, so joins on cell_ids are one-to-one."""
    duplicated = frame["cell_id"].duplicated(keep=False)
    return dg.AssetCheckResult(
        check_name="cell_ids_unique",
        passed=not duplicated.any(),
        metadata={
            "duplicated_rows": int(duplicated.sum()),
            "examples": [int(v) for v in frame.loc[duplicated, "cell_id"].unique()[:5]],
        },
    )


def land_fraction_in_0_1(frame: gpd.GeoDataFrame) -> dg.AssetCheckResult:
    """Land fractions lie in (0, 1] (ocean-only cells are dropped) and land areas are positive."""
    fraction = frame["land_fraction"].to_numpy(dtype=float)
    area = frame["land_area_km2"].to_numpy(dtype=float)
    bad = ~((fraction > 0) & (fraction <= 1) & np.isfinite(area) & (area > 0))
    return dg.AssetCheckResult(
        check_name="land_fraction_in_0_1",
        passed=not bad.any(),
        metadata={
            "out_of_range": int(bad.sum()),
            "min_land_fraction": float(np.nanmin(fraction)) if fraction.size else 0.0,
            "max_land_fraction": float(np.nanmax(fraction)) if fraction.size else 0.0,
        },
    )


Check = Callable[[gpd.GeoDataFrame], dg.AssetCheckResult]

WATERMASK_CHECKS: tuple[Check, ...] = (polygons_valid,)
GRID_CELLS_CHECKS: tuple[Check, ...] = (cell_ids_unique, geometries_valid, land_fraction_in_0_1)


def check_specs(asset: str, checks: tuple[Check, ...]) -> list[dg.AssetCheckSpec]:
    """One blocking spec per check function, named and described by the function."""
    return [
        dg.AssetCheckSpec(check.__name__, asset=asset, description=check.__doc__, blocking=True)
        for check in checks
    ]


def check_results(frame: gpd.GeoDataFrame, checks: tuple[Check, ...]) -> list[dg.AssetCheckResult]:
    return [check(frame) for check in checks]


def checked_output(
    value: Any, metadata: dict[str, Any], results: list[dg.AssetCheckResult]
) -> Iterator[dg.AssetCheckResult | dg.Output]:
    """Yield the check results, then the value only if every check passed.

    The checks run before the IO manager writes anything, so a failed (blocking) check fails
    the run and leaves the previous materialisation in place instead of replacing it.
    """
    yield from results
    failed = [r.check_name for r in results if not r.passed]
    if failed:
        raise dg.Failure(
            description=f"blocking checks failed: {', '.join(failed)}; nothing was written and "
            "the previous version is kept (see the check results for details)",
            metadata={"failed_checks": failed},
        )
    yield dg.Output(value, metadata=metadata)
