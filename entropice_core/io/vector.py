"""Reading user and source vector files (GeoParquet, GeoPackage, GeoJSON, ...) safely."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd


def read_vector(path: str | Path, what: str, missing_hint: str = "") -> gpd.GeoDataFrame:
    """Read a vector file, refusing files that are missing, unreadable, CRS-less or empty.

    Parameters
    ----------
    path : str or Path
        GeoParquet (``.parquet`` suffix) or any file GDAL reads (GeoPackage, GeoJSON, ...).
    what : str
        What the file is, for messages (e.g. "DARTS file", "area of interest file").
    missing_hint : str, default ""
        Where to get the file, appended to the "does not exist" message.

    Returns
    -------
    geopandas.GeoDataFrame
        The features, with a CRS and at least one row.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is unreadable, has no CRS or holds no features.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{what} {path} does not exist{'; ' + missing_hint if missing_hint else ''}"
        )
    try:
        frame = gpd.read_parquet(path) if path.suffix == ".parquet" else gpd.read_file(path)
    except Exception as err:  # pyarrow and GDAL raise many types for damaged files
        raise ValueError(
            f"{what} {path} is not a readable GeoParquet/GeoPackage/vector file ({err}); "
            "check or download it again"
        ) from err
    if frame.crs is None:
        raise ValueError(
            f"{what} {path} has no CRS; set it (geopandas: gdf.set_crs('EPSG:4326') for "
            "lon/lat) and write the file again"
        )
    if frame.empty:
        raise ValueError(f"{what} {path} holds no features")
    return frame
