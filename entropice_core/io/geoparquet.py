"""GeoParquet read/write with atomic replacement (see :mod:`entropice_core.io.atomic`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pyarrow.parquet as pq

from entropice_core.io.atomic import atomic_path


def write_geoparquet(
    frame: gpd.GeoDataFrame,
    path: str | Path,
    *,
    before_commit: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``frame`` as GeoParquet (geo metadata and CRS kept), replacing ``path`` atomically.

    Parameters
    ----------
    frame : geopandas.GeoDataFrame
        Features to write; must have a CRS. The index is not written.
    path : str or Path
        Target file.
    before_commit : callable, optional
        Called with the finished temporary file before the rename (used by tests to inject
        failures, and by callers that validate what they wrote).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    TypeError
        If ``frame`` is not a GeoDataFrame.
    ValueError
        If ``frame`` has no CRS.
    """
    if not isinstance(frame, gpd.GeoDataFrame):
        raise TypeError(f"expected a GeoDataFrame to write to {path}, got {type(frame).__name__}")
    if frame.crs is None:
        raise ValueError(
            f"refusing to write {path}: the GeoDataFrame has no CRS; set one with "
            "gdf.set_crs(...) before writing"
        )
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd", write_covering_bbox=True)
        if before_commit is not None:
            before_commit(tmp)
    return Path(path)


def read_geoparquet(path: str | Path) -> gpd.GeoDataFrame:
    """Read a GeoParquet file, naming the file and the fix when it is missing or corrupt.

    Parameters
    ----------
    path : str or Path
        GeoParquet file.

    Returns
    -------
    geopandas.GeoDataFrame
        The features with their CRS.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file cannot be read as GeoParquet.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: materialise the asset that writes it first "
            "(e.g. `make demo` or the Dagster UI)"
        )
    try:
        return gpd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for damaged files
        raise ValueError(
            f"{path} is not a readable GeoParquet file ({err}); delete it and materialise "
            "the asset again"
        ) from err


def parquet_row_count(path: str | Path) -> int:
    """Count the rows of a Parquet file from its footer, without reading the data.

    Parameters
    ----------
    path : str or Path
        Parquet file.

    Returns
    -------
    int
        Number of rows.
    """
    return pq.ParquetFile(path).metadata.num_rows
