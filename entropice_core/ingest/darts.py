"""DARTS RTS footprints: read the releases, clean them, and label grid cells.

Readers accept the DARTS products as released (Nitze et al. 2025, doi:10.18739/A22B8VD7C):
level-2 (one polygon per RTS and year, e.g. ``DARTS_NitzeEtAl_v1-2_features_2018-2023_level2
.gpkg``), level-1 (one polygon per RTS and image, with the image date; dissolved per year
here) and hand-drawn training labels (``TrainingLabel*.gpkg`` with ``image_id`` and an
``ImageFootprints*.gpkg`` beside them that dates each image), as GeoPackage or GeoParquet. Only
``geometry`` and a year (or date) are required; areas are always recomputed. The files come
through a :class:`DartsClient`: :class:`ArcticDataCenterDartsClient` downloads them, and
:class:`OfflineDartsClient` uses a folder already holding them (the sample region, a copy).

Labels per cell and year: ``rts_count`` (footprints whose representative point lies in the
cell), ``rts_area_km2`` (exact overlay area), ``rts_density`` (count per 1000 km^2 of land) and
``rts_coverage`` (RTS area / land area). All-years aggregates count each slump once: footprints
of any years that overlap (directly or through a chain of overlaps) are one slump, whose extent
is the union of its footprints; a slump seen in 2019 that grew by 2023 is one slump with the
2023 extent (plus any 2019 part it no longer covers).

Observation coverage: a release's coverage layer (``*coverage*``: the area imaged per year)
makes a cell-year that was not imaged missing (NaN), not zero. A cell-year is observed when
the year's coverage covers at least ``min_observed_fraction`` of the cell's area.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import urllib.parse
import urllib.request
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from entropice_core.config import AreaOfInterest, GridSpec
from entropice_core.io.download import DownloadConfig, MissingSourceFiles, SourceClient, download
from entropice_core.io.vector import read_vector
from entropice_core.spatial.overlay import equal_area_crs, overlay_cells

if TYPE_CHECKING:  # heavy libraries are imported where they are used
    import geopandas as gpd
    import pandas as pd
    import xarray as xr

FIRST_YEAR = 1985
DATE_COLUMNS = ("date", "datetime", "image_date", "acquisition_date", "acquired")
FOOTPRINT_COLUMNS = ["year", "area_m2", "source", "geometry"]
COVERAGE_COLUMNS = ["year", "geometry"]
#: File names of the coverage layers of a release (the area imaged per year); footprint
#: listings leave them out.
COVERAGE_PATTERN = "*coverage*"
#: Share of a cell's area a year's coverage must cover for the cell-year to count as observed.
MIN_OBSERVED_FRACTION = 0.5
#: Geometry types of footprints and coverage polygons: areas. Points (centroids) or lines
#: (outlines) would give no area at all, hence zero labels everywhere.
POLYGONAL_TYPES = ("Polygon", "MultiPolygon")
#: Northernmost land is Kaffeklubben Island (83.66 N): no slump, and no image of one, lies
#: further north. Features there mean lon/lat degrees read as metres of a polar projection.
MAX_LAND_LAT = 84.0
#: How to turn other geometry types into footprints, for messages.
POLYGON_HOW = (
    "DARTS footprints are polygons: use the release's footprint files (*level2.*, *level1.* "
    "or TrainingLabel*.gpkg), not centroids or outlines, or make polygons of the features "
    "(e.g. shapely.buffer for points, shapely.polygonize for closed lines) and write the file "
    "again"
)


def _read_vector(path: Path) -> gpd.GeoDataFrame:
    return read_vector(
        path,
        "DARTS file",
        "download it from the NSF Arctic Data Center (doi:10.18739/A22B8VD7C) or run "
        "`make demo` to write the sample region",
    )


def _years_from_dates(frame: gpd.GeoDataFrame, path: Path, what: str = "footprint") -> pd.Series:
    import pandas as pd

    for column in DATE_COLUMNS:
        if column in frame.columns:
            dates = pd.to_datetime(frame[column], errors="coerce", format="mixed")
            if dates.isna().any():
                bad = frame.loc[dates.isna(), column].head(3).tolist()
                raise ValueError(
                    f"{path}: column {column!r} holds values that are not dates: {bad}"
                )
            return dates.dt.year
    raise ValueError(
        f"{path} has no 'year' column and no date column ({', '.join(DATE_COLUMNS)}); its columns "
        f"are {list(frame.columns)}. Add a year column (the observation year of each {what})"
    )


def _training_label_years(frame: gpd.GeoDataFrame, path: Path) -> pd.Series:
    """Years of training labels from the image footprints file beside them."""
    import pandas as pd

    footprints = sorted(path.parent.glob("ImageFootprints*"))
    if not footprints:
        raise ValueError(
            f"{path} holds training labels (image_id, no year) but no ImageFootprints*.gpkg lies "
            "beside it to date the images; put it there or add a year column"
        )
    images = _read_vector(footprints[0])
    if "image_id" not in images.columns:
        raise ValueError(f"{footprints[0]} has no image_id column")
    years = _years_from_dates(images, footprints[0]) if "year" not in images else images["year"]
    by_image = pd.Series(years.to_numpy(), index=images["image_id"].to_numpy())
    missing = ~frame["image_id"].isin(by_image.index)
    if missing.any():
        raise ValueError(
            f"{path}: image_id values {frame.loc[missing, 'image_id'].unique()[:3].tolist()} have "
            f"no entry in {footprints[0].name}"
        )
    return frame["image_id"].map(by_image)


def _to_0_360(xy: np.ndarray) -> np.ndarray:
    return np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + 360, xy[:, 0]), xy[:, 1]])


def _split_at_antimeridian(geoms: np.ndarray) -> np.ndarray:
    """Footprints that wrap around the map (width > 180 degrees) cut into halves at 180."""
    import shapely
    import shapely.affinity

    bounds = shapely.bounds(geoms)
    wraps = (bounds[:, 2] - bounds[:, 0]) > 180
    for i in np.flatnonzero(wraps):
        shifted = shapely.transform(geoms[i], _to_0_360)
        east = shapely.clip_by_rect(shifted, -180, -90, 180, 90)
        west = shapely.affinity.translate(shapely.clip_by_rect(shifted, 180, -90, 540, 90), -360)
        geoms[i] = shapely.union_all([east, west])
    return geoms


def read_footprints(path: str | Path, max_year: int | None = None) -> gpd.GeoDataFrame:
    """Read one DARTS file into clean footprints: year, area_m2, source, geometry (EPSG:4326).

    Invalid geometries are repaired (``make_valid``) and counted in ``frame.attrs["repaired"]``;
    empty or non-polygonal features are dropped and counted in ``attrs["dropped"]``. Level-1
    files (one footprint per image) are dissolved per year into one polygon per slump.

    Parameters
    ----------
    path : str or Path
        GeoPackage or GeoParquet file of a DARTS product or of training labels.
    max_year : int, optional
        Latest plausible year; defaults to the current year.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns year, area_m2, source and geometry (EPSG:4326), with ``attrs`` repaired,
        dropped and path.

    Raises
    ------
    ValueError
        If a feature has no year or one outside ``FIRST_YEAR``-``max_year``, or the file
        has neither a year nor a date column.
    """
    import geopandas as gpd
    import pandas as pd
    import shapely

    path = Path(path)
    frame = _read_vector(path)
    per_image = False  # level-1: one footprint per image, dated instead of yeared
    if "year" in frame.columns:
        years = pd.to_numeric(frame["year"], errors="coerce")
    elif "image_id" in frame.columns and not any(c in frame for c in DATE_COLUMNS):
        years = _training_label_years(frame, path)
    else:
        years, per_image = _years_from_dates(frame, path), True
    _check_years(years, frame, path, max_year)
    polygonal, repaired = _clean_geometries(frame, path, "footprints")
    keep = ~shapely.is_empty(polygonal)
    clean = gpd.GeoDataFrame(
        {"year": years[keep].astype(np.int16).to_numpy(), "source": path.name},
        geometry=polygonal[keep],
        crs="EPSG:4326",
    )
    if per_image:
        clean = dissolve_per_year(clean)
    clean["area_m2"] = clean.to_crs(equal_area_crs(clean)).area.to_numpy()
    clean.attrs.update(repaired=repaired, dropped=int((~keep).sum()), path=str(path))
    return clean[FOOTPRINT_COLUMNS]


def _check_years(
    years: pd.Series, frame: gpd.GeoDataFrame, path: Path, max_year: int | None
) -> None:
    max_year = max_year or dt.date.today().year
    bad = years.isna() | (years < FIRST_YEAR) | (years > max_year)
    if bad.any():
        raise ValueError(
            f"{path}: {bad.sum()} features have a missing or impossible year (e.g. "
            f"{frame.loc[bad].head(3).get('year', years[bad]).tolist()}); years must lie in "
            f"{FIRST_YEAR}-{max_year}"
        )


def check_geometry_types(frame: gpd.GeoDataFrame, path: str | Path, what: str) -> None:
    """Refuse a file holding geometries other than (multi)polygons, counting each type.

    Missing geometries are left to the caller (they are dropped and counted).

    Parameters
    ----------
    frame : geopandas.GeoDataFrame
        The features as read.
    path : str or Path
        The file, for the message.
    what : str
        What the features are ("footprints", "coverage polygons").

    Raises
    ------
    ValueError
        Naming the file, the number of features of each type and the fix.
    """
    counts = frame.geometry.geom_type.dropna().value_counts()
    other = counts[~counts.index.isin(POLYGONAL_TYPES)]
    if other.empty:
        return
    found = ", ".join(f"{int(n)} {kind}" for kind, n in counts.items())
    raise ValueError(
        f"{path}: {what} must be Polygon or MultiPolygon, but its {len(frame)} features are "
        f"{found}; {int(other.sum())} are not areas and would count as no RTS at all. "
        f"{POLYGON_HOW}"
    )


def check_lonlat_bounds(geoms: np.ndarray, path: str | Path, crs: object) -> None:
    """Refuse features that, reprojected to EPSG:4326, are not plausible Arctic lon/lat.

    Longitudes beyond -180..180 (shifted by 360, or projected metres labelled EPSG:4326),
    latitudes beyond -90..90, or features north of :data:`MAX_LAND_LAT` (lon/lat degrees
    labelled as a polar projection land within metres of the pole) all mean a wrong CRS or
    wrong coordinates, which would otherwise give labels of zero everywhere.

    Parameters
    ----------
    geoms : numpy.ndarray
        The features' geometries in EPSG:4326 (missing and empty ones are ignored).
    path : str or Path
        The file, for the message.
    crs : object
        The file's CRS as declared, for the message.

    Raises
    ------
    ValueError
        Naming the file, its bounds and the likely fix.
    """
    import shapely

    present = geoms[~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)]
    if not len(present):
        return
    minx, miny, maxx, maxy = shapely.total_bounds(present)
    span = f"lon {minx:.6g}..{maxx:.6g}, lat {miny:.6g}..{maxy:.6g}"
    declared = getattr(crs, "to_string", lambda: str(crs))()
    finite = bool(np.isfinite([minx, miny, maxx, maxy]).all())
    if not finite or minx < -180 or maxx > 180 or miny < -90 or maxy > 90:
        if finite and 180 < maxx <= 360 and minx >= -180 and miny >= -90 and maxy <= 90:
            fix = (
                "its longitudes look shifted by 360 (0..360 instead of -180..180): subtract 360 "
                "from longitudes above 180 and write the file again"
            )
        else:
            fix = (
                f"the coordinates do not fit its declared CRS {declared} (e.g. EPSG:3413 metres "
                "labelled EPSG:4326): set the right one (geopandas: gdf.set_crs(..., "
                "allow_override=True)) and write the file again"
            )
        raise ValueError(
            f"{path}: its features span {span} in EPSG:4326, outside -180..180 / -90..90; {fix}"
        )
    if maxy > MAX_LAND_LAT:
        raise ValueError(
            f"{path}: its features span {span} in EPSG:4326, reaching north of "
            f"{MAX_LAND_LAT:g} N where there is no land; its declared CRS {declared} is probably "
            "wrong (e.g. lon/lat degrees labelled EPSG:3413): set the right one (geopandas: "
            "gdf.set_crs('EPSG:4326', allow_override=True)) and write the file again"
        )


def _clean_geometries(frame: gpd.GeoDataFrame, path: Path, what: str) -> tuple[np.ndarray, int]:
    """Make EPSG:4326 polygonal geometries and count the repaired ones.

    Files with other geometry types or implausible coordinates are refused
    (:func:`check_geometry_types`, :func:`check_lonlat_bounds`); geometries are repaired,
    cut at 180 degrees, and non-polygonal parts left by repairs dropped (empty where nothing
    polygonal is left).
    """
    import shapely

    check_geometry_types(frame, path, what)
    geoms = frame.to_crs(4326).geometry.to_numpy().copy()
    check_lonlat_bounds(geoms, path, frame.crs)
    invalid = ~shapely.is_valid(geoms) & ~shapely.is_empty(geoms) & ~shapely.is_missing(geoms)
    geoms[invalid] = shapely.make_valid(geoms[invalid])
    geoms = _split_at_antimeridian(geoms)
    # Keep the polygonal part of every feature (repairs can leave lines or points); only
    # collections and missing geometries need a look at their parts.
    polygonal = geoms.copy()
    mixed = ~np.isin(shapely.get_type_id(geoms), (3, 6))  # neither Polygon nor MultiPolygon
    polygonal[mixed] = [
        shapely.union_all([p for p in shapely.get_parts(g) if p.geom_type == "Polygon"])
        if g is not None
        else shapely.Polygon()
        for g in geoms[mixed]
    ]
    return polygonal, int(invalid.sum())


def dissolve_per_year(footprints: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Merge overlapping footprints of the same year (level-1 images of one slump).

    Parameters
    ----------
    footprints : geopandas.GeoDataFrame
        Footprints with year, source and geometry columns.

    Returns
    -------
    geopandas.GeoDataFrame
        One polygon per connected union of a year's footprints, with year, source and geometry.
    """
    import geopandas as gpd
    import pandas as pd
    import shapely

    parts = []
    for year, group in footprints.groupby("year", sort=True):
        merged = shapely.get_parts(shapely.union_all(group.geometry.to_numpy()))
        parts.append(
            gpd.GeoDataFrame(
                {
                    "year": np.full(len(merged), year, dtype=np.int16),
                    "source": np.full(len(merged), group["source"].iloc[0]),
                },
                geometry=merged,
                crs=footprints.crs,
            )
        )
    return pd.concat(parts, ignore_index=True)


def _wanted(name: str, pattern: str, exclude: str | None) -> bool:
    """Tell whether a release file matches ``pattern``, not ``exclude``, in a format read here."""
    return (
        fnmatch.fnmatch(name, pattern)
        and not (exclude and fnmatch.fnmatch(name, exclude))
        and Path(name).suffix in {".parquet", ".gpkg"}
    )


def find_darts_files(
    folder: str | Path, pattern: str = "*level2.*", exclude: str | None = COVERAGE_PATTERN
) -> list[Path]:
    """List the DARTS files in ``folder`` matching ``pattern``.

    Of a GeoParquet/GeoPackage pair with the same name the GeoParquet is taken (same content,
    faster to read).

    Parameters
    ----------
    folder : str or Path
        Folder holding the release files.
    pattern : str
        Glob pattern of the file names; only ``.parquet`` and ``.gpkg`` files count.
    exclude : str, optional
        Glob pattern of names left out; by default the coverage layers
        (:data:`COVERAGE_PATTERN`), so that a footprint pattern never picks them up.

    Returns
    -------
    list of Path
        The matching files, sorted, one per name stem.

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist or holds no matching file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"DARTS folder {folder} does not exist; download the release from the NSF Arctic "
            "Data Center (doi:10.18739/A22B8VD7C) into it, or run `make demo` for the sample"
        )
    found = sorted(p for p in folder.glob(pattern) if _wanted(p.name, "*", exclude) and p.is_file())
    by_stem: dict[str, Path] = {}
    for path in found:
        if path.stem not in by_stem or path.suffix == ".parquet":
            by_stem[path.stem] = path
    if not by_stem:
        raise FileNotFoundError(
            f"no DARTS file matching {pattern!r} (.parquet or .gpkg) in {folder}; "
            f"it holds {sorted(p.name for p in folder.iterdir())[:10]}"
        )
    return sorted(by_stem.values())


#: The NSF Arctic Data Center's DataONE member-node API, and the DARTS package in it.
ADC_URL = "https://arcticdata.io/metacat/d1/mn/v2"
DARTS_PACKAGE = "doi:10.18739/A22B8VD7C"
#: How to get DARTS files an offline client lacks.
OFFLINE_HOW = (
    "download the release from the NSF Arctic Data Center (doi:10.18739/A22B8VD7C) into that "
    "folder, or use the Arctic Data Center client (ArcticDataCenterDartsClient; in Dagster set "
    "the darts_source resource's client='arcticdata'), or run `make demo` for the sample region"
)
#: First bytes of the formats read here (a cheap check that a download is the right file).
_MAGIC = {".gpkg": b"SQLite format 3\x00", ".parquet": b"PAR1"}


class DartsClient(SourceClient):
    """Brings the DARTS release files matching a pattern into a folder."""

    @abstractmethod
    def files(self, folder: str | Path, pattern: str = "*level2.*") -> list[Path]:
        """Return the release files in ``folder`` matching ``pattern``.

        Parameters
        ----------
        folder : str or Path
            Folder that holds (or receives) the release files.
        pattern : str
            Glob pattern of the file names, e.g. ``"*level2.*"``.

        Returns
        -------
        list of Path
            The matching files (see :func:`find_darts_files`), coverage layers left out.
        """

    @abstractmethod
    def coverage_files(self, folder: str | Path, pattern: str = COVERAGE_PATTERN) -> list[Path]:
        """Return the release's coverage layers (area imaged per year) in ``folder``.

        Parameters
        ----------
        folder : str or Path
            Folder that holds (or receives) the release files.
        pattern : str
            Glob pattern of the coverage file names.

        Returns
        -------
        list of Path
            The coverage files; empty where the release has none (every cell then counts as
            observed).
        """


class OfflineDartsClient(DartsClient):
    """Uses the files already in the folder (the sample region, or a copy of the release).

    None matching raises :class:`MissingSourceFiles` naming the folder, pattern and ``how``.
    """

    name = "offline"
    offline = True

    def __init__(self, how: str = OFFLINE_HOW) -> None:
        self._how = how

    def files(self, folder: str | Path, pattern: str = "*level2.*") -> list[Path]:
        """Return the matching release files already in ``folder``.

        Parameters
        ----------
        folder : str or Path
            Folder that holds (or receives) the release files.
        pattern : str
            Glob pattern of the file names, e.g. ``"*level2.*"``.

        Returns
        -------
        list of Path
            The matching files (see :func:`find_darts_files`).

        Raises
        ------
        MissingSourceFiles
            If ``folder`` holds no matching ``.gpkg`` or ``.parquet`` file.
        """
        folder = Path(folder)
        if not folder.is_dir() or not any(
            _wanted(p.name, "*", COVERAGE_PATTERN) for p in folder.glob(pattern) if p.is_file()
        ):
            raise MissingSourceFiles(
                f"DARTS release ({pattern!r})", folder, [folder / pattern], self._how
            )
        return find_darts_files(folder, pattern)

    def coverage_files(self, folder: str | Path, pattern: str = COVERAGE_PATTERN) -> list[Path]:
        """Return the coverage layers already in ``folder`` (none: an empty list).

        Parameters
        ----------
        folder : str or Path
            Folder that holds the release files.
        pattern : str
            Glob pattern of the coverage file names.

        Returns
        -------
        list of Path
            The coverage files, possibly none.

        Raises
        ------
        MissingSourceFiles
            If ``folder`` does not exist (no release at all).
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise MissingSourceFiles("DARTS release", folder, [folder / pattern], self._how)
        if not any(_wanted(p.name, "*", None) for p in folder.glob(pattern)):
            return []
        return find_darts_files(folder, pattern, exclude=None)


def _check_darts_file(suffix: str) -> Callable[[Path], None]:
    def check(path: Path) -> None:
        with open(path, "rb") as f:
            head = f.read(16)
        if not head.startswith(_MAGIC[suffix]):
            raise ValueError(f"it does not start like a {suffix} file")

    return check


class ArcticDataCenterDartsClient(DartsClient):
    """Downloads the release files from the NSF Arctic Data Center (public, no credentials).

    The package's files are listed through the DataONE member-node query API (the Solr index:
    objects whose ``resourceMap`` is ``resource_map_<package>``) and fetched from
    ``{base_url}/object/{identifier}`` with resume and retries (``io.download``). Files already
    in the folder are kept. ``base_url`` may point at a mirror serving the same two endpoints.
    """

    name = "arcticdata"
    offline = False

    def __init__(
        self,
        base_url: str = ADC_URL,
        package: str = DARTS_PACKAGE,
        config: DownloadConfig = DownloadConfig(),
    ) -> None:
        self.base_url, self.package, self.config = base_url.rstrip("/"), package, config

    def listing(self) -> dict[str, str]:
        """List the package's files.

        Returns
        -------
        dict of str to str
            ``{file name: object identifier}`` of the package's files.

        Raises
        ------
        ConnectionError
            If the query API cannot be reached or answers something unreadable.
        """
        query = urllib.parse.urlencode(
            {
                "q": f'resourceMap:"resource_map_{self.package}"',
                "fl": "identifier,fileName",
                "rows": 10000,
                "wt": "json",
            }
        )
        url = f"{self.base_url}/query/solr/?{query}"
        try:
            with urllib.request.urlopen(url, timeout=self.config.timeout_s) as response:
                docs = json.load(response)["response"]["docs"]
        except (OSError, ValueError, KeyError) as err:
            raise ConnectionError(
                f"could not list the DARTS package {self.package} at {self.base_url} ({err}); "
                f"check the connection, or {OFFLINE_HOW}"
            ) from err
        return {d["fileName"]: d["identifier"] for d in docs if d.get("fileName")}

    def files(self, folder: str | Path, pattern: str = "*level2.*") -> list[Path]:
        """Download the matching release files ``folder`` lacks, then list them.

        Parameters
        ----------
        folder : str or Path
            Folder that holds (or receives) the release files.
        pattern : str
            Glob pattern of the file names, e.g. ``"*level2.*"``.

        Returns
        -------
        list of Path
            The matching files (see :func:`find_darts_files`).

        Raises
        ------
        FileNotFoundError
            If the package lists no matching ``.gpkg`` or ``.parquet`` file.
        """
        listing = self.listing()
        if not self._fetch(folder, listing, pattern, COVERAGE_PATTERN):
            raise FileNotFoundError(
                f"the DARTS package {self.package} lists no .gpkg/.parquet file matching "
                f"{pattern!r}; it lists {sorted(listing)[:10]}"
            )
        return find_darts_files(folder, pattern)

    def coverage_files(self, folder: str | Path, pattern: str = COVERAGE_PATTERN) -> list[Path]:
        """Download the coverage layers ``folder`` lacks, then list them.

        Parameters
        ----------
        folder : str or Path
            Folder that holds (or receives) the release files.
        pattern : str
            Glob pattern of the coverage file names.

        Returns
        -------
        list of Path
            The coverage files; empty where the package lists none.
        """
        if not self._fetch(folder, self.listing(), pattern, None):
            return []
        return find_darts_files(folder, pattern, exclude=None)

    def _fetch(
        self, folder: str | Path, listing: dict[str, str], pattern: str, exclude: str | None
    ) -> int:
        """Download the listed files matching ``pattern`` that ``folder`` lacks; count matches."""
        wanted = {name: pid for name, pid in listing.items() if _wanted(name, pattern, exclude)}
        for name, pid in sorted(wanted.items()):
            target = Path(folder) / name
            if not target.exists():
                url = f"{self.base_url}/object/{urllib.parse.quote(pid, safe='')}"
                download(url, target, self.config, _check_darts_file(target.suffix))
        return len(wanted)


def read_darts(paths: list[Path], area: AreaOfInterest | None = None) -> gpd.GeoDataFrame:
    """Read and concatenate several DARTS files (e.g. regions or products) into footprints.

    Parameters
    ----------
    paths : list of Path
        DARTS files (see :func:`read_footprints`).
    area : AreaOfInterest, optional
        The area the labels are for: at least one footprint must lie in it (a release larger
        than the area is fine; one wholly outside it would label every cell zero).

    Returns
    -------
    geopandas.GeoDataFrame
        The footprints of all files, with ``attrs`` repaired and dropped summed over them.

    Raises
    ------
    ValueError
        If ``paths`` is empty, a file is refused by :func:`read_footprints`, or no footprint
        lies in ``area`` (naming each file's bounds and the area's).
    """
    import pandas as pd

    if not paths:
        raise ValueError("no DARTS files given; point the darts source at a file or folder")
    frames = [read_footprints(p) for p in paths]
    combined = pd.concat(frames, ignore_index=True)
    if area is not None:
        check_in_area(dict(zip(paths, frames, strict=True)), area)
    combined.attrs.update(
        repaired=sum(f.attrs["repaired"] for f in frames),
        dropped=sum(f.attrs["dropped"] for f in frames),
    )
    return combined


def _bounds_text(bounds: Sequence[float]) -> str:
    minx, miny, maxx, maxy = bounds
    return f"lon {minx:.6g}..{maxx:.6g}, lat {miny:.6g}..{maxy:.6g}"


def check_in_area(frames: Mapping[Path, gpd.GeoDataFrame], area: AreaOfInterest) -> None:
    """Refuse footprints of which none lies in the area of interest.

    Parameters
    ----------
    frames : mapping of Path to geopandas.GeoDataFrame
        Footprints (EPSG:4326) per file.
    area : AreaOfInterest
        The area the labels are for.

    Raises
    ------
    ValueError
        Naming each file with its bounds, the area with its bounds, and the likely causes.
    """
    import shapely

    for frame in frames.values():
        geoms = frame.geometry.to_numpy()
        if len(geoms) and shapely.intersects(geoms, area.geometry).any():
            return
    files = "; ".join(
        f"{path}: {_bounds_text(frame.total_bounds) if len(frame) else 'no footprint'}"
        for path, frame in frames.items()
    )
    raise ValueError(
        f"no DARTS footprint lies in the area of interest {area.name!r} "
        f"({_bounds_text(area.geometry.bounds)}); the files span {files}. A mislabelled CRS, "
        "longitudes shifted by 360, or release files of another region give this: check the "
        "files' CRS and coordinates, or point the darts source at the files of this area"
    )


def read_coverage(paths: list[Path], max_year: int | None = None) -> gpd.GeoDataFrame:
    """Read a release's coverage layers (the area imaged per year) into one polygon per year.

    Coverage polygons (image footprints or their union) need a ``year`` column, or a date
    column as level-1 footprints have. Invalid geometries are repaired and counted in
    ``attrs["repaired"]``, non-polygonal ones dropped (``attrs["dropped"]``), polygons that
    wrap around the map cut at 180 degrees, and each year's polygons dissolved into one.

    Parameters
    ----------
    paths : list of Path
        Coverage files (GeoParquet or GeoPackage); none gives an empty frame (no coverage
        layer: every cell counts as observed).
    max_year : int, optional
        Latest plausible year; defaults to the current year.

    Returns
    -------
    geopandas.GeoDataFrame
        Columns year (int16, sorted, one row per year) and geometry (EPSG:4326), with
        ``attrs`` repaired, dropped and paths.

    Raises
    ------
    ValueError
        If a file has no CRS, is unreadable, has neither a year nor a date column, or a
        feature has a missing or impossible year; the message names the file.
    """
    import geopandas as gpd
    import pandas as pd
    import shapely

    years_parts, geom_parts, repaired, dropped = [], [], 0, 0
    for path in map(Path, paths):
        frame = _read_vector(path)
        if "year" in frame.columns:
            years = pd.to_numeric(frame["year"], errors="coerce")
        else:
            years = _years_from_dates(frame, path, "coverage polygon (the year it was imaged)")
        _check_years(years, frame, path, max_year)
        polygonal, fixed = _clean_geometries(frame, path, "coverage polygons")
        keep = ~shapely.is_empty(polygonal)
        years_parts.append(years[keep].to_numpy(np.int16))
        geom_parts.append(polygonal[keep])
        repaired, dropped = repaired + fixed, dropped + int((~keep).sum())
    years = np.concatenate(years_parts) if paths else np.array([], np.int16)
    geoms = np.concatenate(geom_parts) if paths else np.array([], object)
    per_year = np.unique(years)
    coverage = gpd.GeoDataFrame(
        {"year": per_year.astype(np.int16)},
        geometry=[shapely.union_all(geoms[years == year]) for year in per_year],
        crs="EPSG:4326",
    )
    coverage.attrs.update(repaired=repaired, dropped=dropped, paths=[str(p) for p in paths])
    return coverage[COVERAGE_COLUMNS]


def observed_area_km2(coverage: gpd.GeoDataFrame) -> dict[int, float]:
    """Measure each year's coverage on the WGS84 ellipsoid (equal-area projection).

    Parameters
    ----------
    coverage : geopandas.GeoDataFrame
        Coverage as :func:`read_coverage` returns it (one polygon per year).

    Returns
    -------
    dict of int to float
        Area in km^2 per year; empty for an empty coverage.
    """
    if coverage.empty:
        return {}
    from entropice_core.spatial.overlay import CELL_SEGMENT_DEG

    # Densified first, so the projected outline is the lon/lat polygon the file holds.
    areas = coverage.geometry.segmentize(CELL_SEGMENT_DEG).to_crs(equal_area_crs(coverage)).area
    return {int(y): float(a) / 1e6 for y, a in zip(coverage["year"], areas, strict=True)}


def slump_ids(footprints: gpd.GeoDataFrame) -> np.ndarray:
    """Give one id per slump: footprints connected by overlap across any years share an id.

    Parameters
    ----------
    footprints : geopandas.GeoDataFrame
        Footprints of any years.

    Returns
    -------
    numpy.ndarray
        Slump id (0 to n_slumps - 1) of each footprint, in row order.
    """
    import shapely
    from scipy.sparse import coo_array
    from scipy.sparse.csgraph import connected_components

    geoms = footprints.geometry.to_numpy()
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    graph = coo_array((np.ones(len(left)), (left, right)), shape=(len(geoms), len(geoms)))
    _, labels = connected_components(graph, directed=False)
    return labels


def observed_fraction(
    coverage: gpd.GeoDataFrame | None, cells: gpd.GeoDataFrame, years: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Share of each cell's area that each year's coverage covers.

    The share of the cell's whole area, not of its land: the coverage is where images were
    taken, and images cover land and water alike, so the share of the cell imaged is the
    share of its land imaged unless an image edge runs along a coast.

    Parameters
    ----------
    coverage : geopandas.GeoDataFrame or None
        One polygon per year (:func:`read_coverage`); None or empty: every cell observed.
    cells : geopandas.GeoDataFrame
        Grid cells (EPSG:4326).
    years : numpy.ndarray
        The years of the labels; a year the coverage lacks is covered nowhere.

    Returns
    -------
    fraction : numpy.ndarray
        ``(cell, year)`` share in [0, 1]; all ones without coverage.
    observed_km2 : numpy.ndarray
        Area of the cells covered, per year (km^2).
    """
    from entropice_core.spatial.overlay import cell_areas_km2, covered_area_km2

    cell_geoms = cells.geometry.reset_index(drop=True)
    areas = cell_areas_km2(cell_geoms)
    if coverage is None or coverage.empty:
        return np.ones((len(cells), len(years))), np.full(len(years), areas.sum())
    by_year = dict(zip(coverage["year"].astype(int), coverage.geometry, strict=True))
    covered = np.column_stack(
        [covered_area_km2(by_year.get(int(y)), cell_geoms, areas) for y in years]
    )
    return np.clip(covered / areas[:, None], 0.0, 1.0), covered.sum(axis=0)


def rts_labels(
    footprints: gpd.GeoDataFrame,
    cells: gpd.GeoDataFrame,
    spec: GridSpec,
    coverage: gpd.GeoDataFrame | None = None,
    min_observed_fraction: float = MIN_OBSERVED_FRACTION,
) -> xr.Dataset:
    """Compute per-cell, per-year RTS metrics plus all-years aggregates as an xdggs L2 dataset.

    ``footprints`` are as :func:`read_footprints` returns them: their ``area_m2`` (recomputed
    in the equal-area CRS at ingest) is the area of each footprint that lies inside one cell;
    without that column it is computed here.

    With a ``coverage`` (the release's imaged area per year, :func:`read_coverage`), a
    cell-year is observed when the year's coverage covers at least ``min_observed_fraction``
    of the cell's area (``observed_fraction``); an unobserved cell-year is NaN in the per-year
    metrics, not zero, and its footprints (by the cell holding their representative point, as
    for the count) stay out of the all-years aggregates, which are NaN for a cell observed in
    no year. Without coverage every cell-year is observed. Observed cells without RTS are
    zero: the negatives that training needs.

    Parameters
    ----------
    footprints : geopandas.GeoDataFrame
        Footprints with year and geometry (and optionally area_m2) columns.
    cells : geopandas.GeoDataFrame
        Grid cells with cell_id, geometry and land_area_km2 columns.
    spec : GridSpec
        Grid of ``cells``; gives the xdggs attrs of ``cell_ids``.
    coverage : geopandas.GeoDataFrame, optional
        One polygon per year of imaged area; None or empty: no coverage layer.
    min_observed_fraction : float, default MIN_OBSERVED_FRACTION
        Share of a cell's area a year's coverage must cover for the cell-year to count.

    Returns
    -------
    xarray.Dataset
        ``rts_count``, ``rts_area_km2``, ``rts_density``, ``rts_coverage`` and
        ``observed_fraction`` over (cell_ids, year), float; their ``*_all_years``
        aggregates and ``observed_years`` over cell_ids; and ``land_area_km2``. attrs
        ``observed_area_km2`` (area of the cells covered, per year) and
        ``min_observed_fraction``.

    Raises
    ------
    ValueError
        If the coverage lacks a year that has footprints, or ``min_observed_fraction`` is
        not in (0, 1].
    """
    import geopandas as gpd
    import pandas as pd
    import shapely
    import xarray as xr

    if not 0.0 < min_observed_fraction <= 1.0:
        raise ValueError(f"min_observed_fraction must lie in (0, 1], got {min_observed_fraction}")
    coverage = coverage if coverage is not None and not coverage.empty else None
    years = np.unique(footprints["year"].to_numpy()).astype(np.int16)
    if coverage is not None:
        unimaged = np.setdiff1d(years, coverage["year"].to_numpy())
        if len(unimaged):
            raise ValueError(
                f"the DARTS coverage has no imaged area in {unimaged.tolist()}, years that have "
                "footprints; give a coverage layer with every year of the release, or none "
                "(then every cell counts as observed)"
            )
        years = np.union1d(years, coverage["year"].to_numpy()).astype(np.int16)
    n_cells = len(cells)
    land = cells["land_area_km2"].to_numpy()
    cell_geoms = cells.geometry.reset_index(drop=True)
    geoms = footprints.geometry.reset_index(drop=True)
    fraction, observed_km2 = observed_fraction(coverage, cells, years)
    observed = fraction >= min_observed_fraction

    known = footprints["area_m2"].to_numpy() / 1e6 if "area_m2" in footprints else None
    overlay = overlay_cells(geoms, cell_geoms, areas_km2=known)
    year_pos = np.searchsorted(years, footprints["year"].to_numpy())
    area = np.zeros((n_cells, len(years)))
    np.add.at(area, (overlay.cell, year_pos[overlay.polygon]), overlay.area_km2)
    inside = overlay.owner >= 0
    count = np.zeros((n_cells, len(years)))
    np.add.at(count, (overlay.owner[inside], year_pos[inside]), 1)
    area[~observed], count[~observed] = np.nan, np.nan

    # All years: the footprints of observed cell-years. A slump of one footprint is that
    # footprint; others are the union of theirs.
    kept = ~inside | observed[np.maximum(overlay.owner, 0), year_pos]
    slump = np.full(len(footprints), -1)
    if kept.any():
        slump[kept] = slump_ids(footprints[kept])
    single = kept & (np.bincount(slump[kept], minlength=1)[np.maximum(slump, 0)] == 1)
    multi = kept & ~single
    area_all = np.bincount(
        overlay.cell[single[overlay.polygon]],
        weights=overlay.area_km2[single[overlay.polygon]],
        minlength=n_cells,
    ).astype(np.float64)  # an empty bincount is integer
    owners_all = [overlay.owner[single]]
    if multi.any():
        grouped = pd.Series(geoms[multi].to_numpy(), index=slump[multi]).groupby(level=0)
        extents = gpd.GeoSeries(
            [shapely.union_all(group.to_numpy()) for _, group in grouped], crs=geoms.crs
        )
        merged = overlay_cells(extents, cell_geoms)
        area_all += np.bincount(merged.cell, weights=merged.area_km2, minlength=n_cells)
        owners_all.append(merged.owner)
    owners = np.concatenate(owners_all)
    count_all = np.bincount(owners[owners >= 0], minlength=n_cells).astype(np.float64)
    observed_years = observed.sum(axis=1).astype(np.int32)
    if coverage is not None:  # without coverage a cell is observed even with no year at all
        area_all[observed_years == 0], count_all[observed_years == 0] = np.nan, np.nan

    per_1000 = 1000.0 / land
    dataset = xr.Dataset(
        {
            "rts_count": (("cell_ids", "year"), count),
            "rts_area_km2": (("cell_ids", "year"), area),
            "rts_density": (("cell_ids", "year"), count * per_1000[:, None]),
            "rts_coverage": (("cell_ids", "year"), area / land[:, None]),
            "observed_fraction": (("cell_ids", "year"), fraction),
            "rts_count_all_years": ("cell_ids", count_all),
            "rts_area_km2_all_years": ("cell_ids", area_all),
            "rts_density_all_years": ("cell_ids", count_all * per_1000),
            "rts_coverage_all_years": ("cell_ids", area_all / land),
            "observed_years": ("cell_ids", observed_years),
            "land_area_km2": ("cell_ids", land),
        },
        coords={
            "cell_ids": ("cell_ids", cells["cell_id"].to_numpy(np.uint64), spec.xdggs_attrs),
            "year": ("year", years.astype(np.int16)),
        },
    )
    units = {
        "rts_count": "1",
        "rts_area_km2": "km2",
        "rts_density": "RTS per 1000 km2 of land",
        "rts_coverage": "1",
        "observed_fraction": "1",
        "observed_years": "1",
        "land_area_km2": "km2",
    }
    for name, variable in dataset.data_vars.items():
        variable.attrs["units"] = units[str(name).removesuffix("_all_years")]
    dataset.attrs.update(
        source="DARTS RTS footprints",
        grid=spec.key,
        slump_matching="footprints overlapping across years form one slump",
        observation=(
            "DARTS coverage layer: a cell-year is observed when its coverage covers at least "
            "min_observed_fraction of the cell's area; unobserved ones are NaN"
            if coverage is not None
            else "no coverage layer: every cell counts as observed"
        ),
        min_observed_fraction=float(min_observed_fraction),
        observed_area_km2={str(y): float(a) for y, a in zip(years, observed_km2, strict=True)},
    )
    return dataset


def observation_summary(labels: xr.Dataset) -> dict[str, object]:
    """Summarise what the labels count as observed, for the asset metadata and the CLI.

    Parameters
    ----------
    labels : xarray.Dataset
        Labels from :func:`rts_labels`.

    Returns
    -------
    dict
        ``observation`` (with or without a coverage layer), ``min_observed_fraction``,
        ``observed_area_km2`` (per year, of the cells), ``cells_never_observed`` and
        ``cell_years_unobserved``.
    """
    observed = labels["observed_fraction"] >= labels.attrs["min_observed_fraction"]
    return {
        "observation": labels.attrs["observation"],
        "min_observed_fraction": labels.attrs["min_observed_fraction"],
        "observed_area_km2": {
            year: round(area, 3) for year, area in labels.attrs["observed_area_km2"].items()
        },
        "cells_never_observed": int((labels["observed_years"] == 0).sum()),
        "cell_years_unobserved": int((~observed).sum()),
    }


def footprint_area_in_cells_km2(
    footprints: gpd.GeoDataFrame, cells: gpd.GeoDataFrame, observed: xr.DataArray | None = None
) -> float:
    """Measure the total footprint area inside the cells, by another route than :func:`rts_labels`.

    The footprints (per year, so overlapping years add up as in the labels) are clipped to the
    dissolved union of the cells they touch (of the cells observed that year, where
    ``observed`` is given), then measured in the equal-area projection; the asset check
    compares this with the sum of the per-cell labels.

    Parameters
    ----------
    footprints : geopandas.GeoDataFrame
        Footprints (EPSG:4326) of any years.
    cells : geopandas.GeoDataFrame
        Grid cells (EPSG:4326).
    observed : xarray.DataArray, optional
        Boolean ``(cell_ids, year)`` in the order of ``cells``: the observed cell-years
        (``labels["observed_fraction"] >= min_observed_fraction``). None: every cell-year.

    Returns
    -------
    float
        Footprint area inside the (observed) cells in km^2, each year's footprints counted
        separately.
    """
    import geopandas as gpd
    import shapely

    if footprints.empty:
        return 0.0
    cell_geoms = cells.geometry.to_numpy()
    tree = shapely.STRtree(cell_geoms)
    pieces = []
    for year, group in footprints.groupby("year"):
        geoms = group.geometry.to_numpy()
        touched = np.unique(tree.query(geoms)[1])
        if observed is not None:
            touched = touched[observed.sel(year=year).to_numpy()[touched]]
        region = shapely.union_all(cell_geoms[touched])
        pieces.append(shapely.intersection(geoms, region))
    clipped = gpd.GeoSeries(np.concatenate(pieces), crs=footprints.crs)
    return float(clipped.segmentize(0.01).to_crs(equal_area_crs(cells)).area.sum() / 1e6)
