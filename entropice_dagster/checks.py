"""Every asset check of the graph, computed inside the asset from the value it just built.

Checks run in the asset's own step (``check_specs``) rather than as separate ``@asset_check``s,
which would load every partition again. They are blocking: the asset yields its check results
first and its ``Output`` only when all passed (``checked_output``), so a failed check fails the
run before the IO manager writes anything and the previous version stays in place. Every asset
returns through ``checked_output`` (an empty list where it has no check), one style for all.

A check is a function returning one ``AssetCheckResult`` named after the function; its
docstring (or ``description``) is what the UI shows.
"""

import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dagster as dg
import numpy as np

#: The labels' total RTS area may differ from the clipped footprint area by this fraction.
AREA_TOLERANCE = 1e-3
#: Plausible cell means of thawing degree days (degC day) north of 50 N.
TDD_RANGE = (0.0, 4000.0)
#: Plausible ellipsoidal heights in the Arctic (m): below the sea floor of fjords, above Denali.
ELEVATION_RANGE = (-200.0, 6500.0)
#: Plausible median area of RTS footprints (m2). DARTS v1 footprints run 288-636,962 m2 with a
#: median of about 2,200 m2 (data-sources.md); the bounds leave room for small or odd subsets
#: (a few large slumps), and a median outside them means the features are not slump
#: footprints: points buffered to dots, areas scaled by a wrong CRS, or image footprints or
#: coverage polygons read as footprints.
FOOTPRINT_MEDIAN_M2 = (100.0, 1_000_000.0)
#: Largest plausible single footprint (km2): about eight times the largest DARTS footprint
#: (0.64 km2), room for a level-1 slump dissolved from overlapping images.
FOOTPRINT_MAX_KM2 = 5.0
#: Longest plausible cell mean of AlphaEarth embeddings: unit vectors, each stretched at most
#: by the int8 rounding of the COGs (about 3 %).
EMBEDDING_NORM_MAX = 1.05


def _geometry_check(name: str, frame: Any, allow_empty: bool) -> dg.AssetCheckResult:
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


def polygons_valid(frame: Any) -> dg.AssetCheckResult:
    """Water polygons are present, valid (OGC) and in EPSG:4326; a tile without water is empty."""
    return _geometry_check("polygons_valid", frame, allow_empty=True)


def geometries_valid(frame: Any) -> dg.AssetCheckResult:
    """Geometries are present, non-empty, valid (OGC) and in EPSG:4326."""
    return _geometry_check("geometries_valid", frame, allow_empty=False)


def cell_ids_unique(frame: Any) -> dg.AssetCheckResult:
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


def land_fraction_in_0_1(frame: Any) -> dg.AssetCheckResult:
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


def footprints_plausible(footprints: Any) -> dg.AssetCheckResult:
    """There are footprints, and their total area is plausible for RTS: positive, the median
    footprint within FOOTPRINT_MEDIAN_M2 and none larger than FOOTPRINT_MAX_KM2."""
    areas = footprints["area_m2"].to_numpy(dtype=float)
    total_km2 = float(areas.sum() / 1e6) if areas.size else 0.0
    median = float(np.median(areas)) if areas.size else 0.0
    largest_km2 = float(areas.max() / 1e6) if areas.size else 0.0
    passed = bool(
        areas.size > 0
        and total_km2 > 0
        and FOOTPRINT_MEDIAN_M2[0] <= median <= FOOTPRINT_MEDIAN_M2[1]
        and largest_km2 <= FOOTPRINT_MAX_KM2
    )
    return dg.AssetCheckResult(
        check_name="footprints_plausible",
        passed=passed,
        metadata={
            "footprints": int(areas.size),
            "total_area_km2": total_km2,
            "median_area_m2": median,
            "largest_area_km2": largest_km2,
            "years": sorted(int(y) for y in footprints["year"].unique()),
        },
    )


def rts_area_matches_footprints(labels: Any, expected_km2: float) -> dg.AssetCheckResult:
    """Total RTS area over all observed cell-years equals the footprint area inside the
    observed cells (clipped independently, ``expected_km2``) within AREA_TOLERANCE."""
    labelled = float(labels["rts_area_km2"].sum())
    error = abs(labelled - expected_km2) / expected_km2 if expected_km2 else abs(labelled)
    return dg.AssetCheckResult(
        check_name="rts_area_matches_footprints",
        passed=bool(error <= AREA_TOLERANCE),
        metadata={
            "labelled_km2": labelled,
            "footprints_in_cells_km2": expected_km2,
            "relative_error": error,
        },
    )


def _cell_means_in_range(
    name: str, values: Any, n_cells: int, expected_cells: int, bounds: tuple[float, float]
) -> dg.AssetCheckResult:
    """Every cell present, some finite value, and all finite values within ``bounds``."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    passed = bool(
        n_cells == expected_cells
        and finite.size > 0
        and bounds[0] <= finite.min()
        and finite.max() <= bounds[1]
    )
    return dg.AssetCheckResult(
        check_name=name,
        passed=passed,
        metadata={
            "cells": n_cells,
            "expected_cells": expected_cells,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
        },
    )


def degree_days_plausible(features: Any, cells: Any) -> dg.AssetCheckResult:
    """Every cell is present and cell means of thawing degree days lie in TDD_RANGE."""
    return _cell_means_in_range(
        "degree_days_plausible",
        features["thawing_degree_days"].to_numpy(),
        features.sizes["cell_ids"],
        len(cells),
        TDD_RANGE,
    )


def elevation_plausible(features: Any, cells: Any) -> dg.AssetCheckResult:
    """Every cell of the grid is present and cell means of elevation lie in ELEVATION_RANGE."""
    return _cell_means_in_range(
        "elevation_plausible",
        features["elevation_mean"].to_numpy(),
        features.sizes["cell_ids"],
        len(cells),
        ELEVATION_RANGE,
    )


def embeddings_valid(features: Any, cells: Any) -> dg.AssetCheckResult:
    """Every cell of the grid is present, valid_fraction lies in [0, 1], the embedding means
    are finite exactly where valid_fraction > 0 (NaN where no pixel is valid) and no mean is
    longer than a unit vector (up to the int8 rounding, EMBEDDING_NORM_MAX)."""
    from entropice_core.ingest.alphaearth import BANDS

    valid = features["valid_fraction"].to_numpy()
    x = np.stack([features[b].to_numpy() for b in BANDS], axis=-1)
    finite = np.isfinite(x).all(axis=-1)
    mixed = np.isfinite(x).any(axis=-1) & ~finite
    norms = np.linalg.norm(x[finite], axis=-1)
    bad_fraction = ~((valid >= 0) & (valid <= 1))
    mismatched = finite != (valid > 0)
    passed = bool(
        features.sizes["cell_ids"] == len(cells)
        and not bad_fraction.any()
        and not mismatched.any()
        and not mixed.any()
        and (norms.size == 0 or norms.max() <= EMBEDDING_NORM_MAX)
    )
    return dg.AssetCheckResult(
        check_name="embeddings_valid",
        passed=passed,
        metadata={
            "cells": int(features.sizes["cell_ids"]),
            "expected_cells": len(cells),
            "valid_fraction_out_of_range": int(bad_fraction.sum()),
            "finite_where_no_valid_pixel_or_nan_where_valid": int(mismatched.sum()),
            "partly_nan_embeddings": int(mixed.sum()),
            "max_norm": float(norms.max()) if norms.size else None,
        },
    )


def beats_majority_baseline(result: Any) -> dg.AssetCheckResult:
    """The model scores higher than the majority class on the experiment's refit metric (F1
    macro by default), both in spatial CV and on the test blocks."""
    metric = result.refit_metric
    return dg.AssetCheckResult(
        check_name="beats_majority_baseline",
        passed=result.beats_baseline(),
        metadata={
            "metric": metric,
            **{key: float(value) for key, value in result.scores.loc[metric].items()},
        },
    )


Check = Callable[..., dg.AssetCheckResult]

#: Descriptions that name the thresholds (a docstring cannot be formatted).
DESCRIPTIONS: dict[Check, str] = {
    footprints_plausible: "There is at least one footprint and their total area is plausible "
    f"for RTS: positive, the median footprint within {FOOTPRINT_MEDIAN_M2[0]:g}.."
    f"{FOOTPRINT_MEDIAN_M2[1]:g} m2 (DARTS v1: median about 2,200 m2) and none larger than "
    f"{FOOTPRINT_MAX_KM2:g} km2 (DARTS v1: at most 0.64 km2).",
    rts_area_matches_footprints: "Total RTS area over all observed cell-years equals the "
    "footprint area inside the cells observed in each footprint's year (clipped "
    f"independently) within {AREA_TOLERANCE:.1%}.",
    degree_days_plausible: "Every cell is present and cell means of thawing degree days lie "
    f"in {TDD_RANGE[0]:g}..{TDD_RANGE[1]:g} degC day.",
    elevation_plausible: "Every cell of the grid is present and cell means of elevation lie "
    f"in {ELEVATION_RANGE[0]:g}..{ELEVATION_RANGE[1]:g} m.",
    embeddings_valid: "Every cell of the grid is present, valid_fraction lies in [0, 1], the "
    "embedding means are finite exactly where valid_fraction > 0 and none is longer than "
    f"{EMBEDDING_NORM_MAX:g} (unit vectors up to the int8 rounding).",
}

WATERMASK_CHECKS: tuple[Check, ...] = (polygons_valid,)
GRID_CELLS_CHECKS: tuple[Check, ...] = (cell_ids_unique, geometries_valid, land_fraction_in_0_1)


def check_specs(
    asset: str, *checks: Check, partitions_def: dg.PartitionsDefinition | None = None
) -> list[dg.AssetCheckSpec]:
    """One blocking spec per check function, named and described by the function; with the
    asset's ``partitions_def``, each result is recorded against the partition it checked."""
    with warnings.catch_warnings():  # partitioned check specs are a preview in Dagster 1.13
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return [
            dg.AssetCheckSpec(
                check.__name__,
                asset=asset,
                description=DESCRIPTIONS.get(check, check.__doc__),
                blocking=True,
                partitions_def=partitions_def,
            )
            for check in checks
        ]


def check_results(frame: Any, checks: tuple[Check, ...]) -> list[dg.AssetCheckResult]:
    """Run checks that take the value alone."""
    return [check(frame) for check in checks]


def checked_output(
    value: Any, metadata: dict[str, Any], results: Sequence[dg.AssetCheckResult] = ()
) -> Iterator[dg.AssetCheckResult | dg.Output]:
    """Yield the check results, then the value only if every check passed.

    The checks run before the IO manager writes anything, so a failed (blocking) check fails
    the run and leaves the previous materialisation in place instead of replacing it. The
    value's content hash is its data version: downstream assets are stale (in the UI, and for
    their automation conditions) only when the content changed, not on every rerun.
    """
    yield from results
    failed = [str(r.check_name) for r in results if not r.passed]
    if failed:
        raise dg.Failure(
            description=f"blocking checks failed: {', '.join(failed)}; nothing was written and "
            "the previous version is kept (see the check results for details)",
            metadata={"failed_checks": failed},
        )
    from entropice_core.io.versions import content_version

    version = content_version(value)
    with warnings.catch_warnings():  # Output(data_version=) is beta since 1.x
        warnings.simplefilter("ignore", dg.BetaWarning)
        output = dg.Output(
            value, metadata=metadata, data_version=dg.DataVersion(version) if version else None
        )
    yield output
