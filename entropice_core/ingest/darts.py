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
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import urllib.parse
import urllib.request
from abc import abstractmethod
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
import shapely.affinity
import xarray as xr
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from entropice_core.config import GridSpec
from entropice_core.io.download import DownloadConfig, MissingSourceFiles, SourceClient, download
from entropice_core.io.vector import read_vector
from entropice_core.spatial.overlay import equal_area_crs, overlay_cells

FIRST_YEAR = 1985
DATE_COLUMNS = ("date", "datetime", "image_date", "acquisition_date", "acquired")
FOOTPRINT_COLUMNS = ["year", "area_m2", "source", "geometry"]


def _read_vector(path: Path) -> gpd.GeoDataFrame:
    return read_vector(
        path,
        "DARTS file",
        "download it from the NSF Arctic Data Center (doi:10.18739/A22B8VD7C) or run "
        "`make demo` to write the sample region",
    )


def _years_from_dates(frame: gpd.GeoDataFrame, path: Path) -> pd.Series:
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
        f"are {list(frame.columns)}. Add a year column (the observation year of each footprint)"
    )


def _training_label_years(frame: gpd.GeoDataFrame, path: Path) -> pd.Series:
    """Years of training labels from the image footprints file beside them."""
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
    path = Path(path)
    frame = _read_vector(path)
    per_image = False  # level-1: one footprint per image, dated instead of yeared
    if "year" in frame.columns:
        years = pd.to_numeric(frame["year"], errors="coerce")
    elif "image_id" in frame.columns and not any(c in frame for c in DATE_COLUMNS):
        years = _training_label_years(frame, path)
    else:
        years, per_image = _years_from_dates(frame, path), True
    max_year = max_year or dt.date.today().year
    bad = years.isna() | (years < FIRST_YEAR) | (years > max_year)
    if bad.any():
        raise ValueError(
            f"{path}: {bad.sum()} features have a missing or impossible year (e.g. "
            f"{frame.loc[bad].head(3).get('year', years[bad]).tolist()}); years must lie in "
            f"{FIRST_YEAR}-{max_year}"
        )

    geoms = frame.to_crs(4326).geometry.to_numpy().copy()
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
    keep = ~shapely.is_empty(polygonal)
    clean = gpd.GeoDataFrame(
        {"year": years[keep].astype(np.int16).to_numpy(), "source": path.name},
        geometry=polygonal[keep],
        crs="EPSG:4326",
    )
    if per_image:
        clean = dissolve_per_year(clean)
    clean["area_m2"] = clean.to_crs(equal_area_crs(clean)).area.to_numpy()
    clean.attrs.update(repaired=int(invalid.sum()), dropped=int((~keep).sum()), path=str(path))
    return clean[FOOTPRINT_COLUMNS]


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


def find_darts_files(folder: str | Path, pattern: str = "*level2.*") -> list[Path]:
    """List the DARTS files in ``folder`` matching ``pattern``.

    Of a GeoParquet/GeoPackage pair with the same name the GeoParquet is taken (same content,
    faster to read).

    Parameters
    ----------
    folder : str or Path
        Folder holding the release files.
    pattern : str
        Glob pattern of the file names; only ``.parquet`` and ``.gpkg`` files count.

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
    found = sorted(
        p for p in folder.glob(pattern) if p.suffix in {".parquet", ".gpkg"} and p.is_file()
    )
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
            The matching files (see :func:`find_darts_files`).
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
            p.suffix in _MAGIC for p in folder.glob(pattern) if p.is_file()
        ):
            raise MissingSourceFiles(
                f"DARTS release ({pattern!r})", folder, [folder / pattern], self._how
            )
        return find_darts_files(folder, pattern)


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
        folder = Path(folder)
        listing = self.listing()
        wanted = {
            name: pid
            for name, pid in listing.items()
            if fnmatch.fnmatch(name, pattern) and Path(name).suffix in _MAGIC
        }
        if not wanted:
            raise FileNotFoundError(
                f"the DARTS package {self.package} lists no .gpkg/.parquet file matching "
                f"{pattern!r}; it lists {sorted(listing)[:10]}"
            )
        for name, pid in sorted(wanted.items()):
            target = folder / name
            if not target.exists():
                url = f"{self.base_url}/object/{urllib.parse.quote(pid, safe='')}"
                download(url, target, self.config, _check_darts_file(target.suffix))
        return find_darts_files(folder, pattern)


def read_darts(paths: list[Path]) -> gpd.GeoDataFrame:
    """Read and concatenate several DARTS files (e.g. regions or products) into footprints.

    Parameters
    ----------
    paths : list of Path
        DARTS files (see :func:`read_footprints`).

    Returns
    -------
    geopandas.GeoDataFrame
        The footprints of all files, with ``attrs`` repaired and dropped summed over them.

    Raises
    ------
    ValueError
        If ``paths`` is empty.
    """
    if not paths:
        raise ValueError("no DARTS files given; point the darts source at a file or folder")
    frames = [read_footprints(p) for p in paths]
    combined = pd.concat(frames, ignore_index=True)
    combined.attrs.update(
        repaired=sum(f.attrs["repaired"] for f in frames),
        dropped=sum(f.attrs["dropped"] for f in frames),
    )
    return combined


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
    geoms = footprints.geometry.to_numpy()
    left, right = shapely.STRtree(geoms).query(geoms, predicate="intersects")
    graph = coo_array((np.ones(len(left)), (left, right)), shape=(len(geoms), len(geoms)))
    _, labels = connected_components(graph, directed=False)
    return labels


def rts_labels(footprints: gpd.GeoDataFrame, cells: gpd.GeoDataFrame, spec: GridSpec) -> xr.Dataset:
    """Compute per-cell, per-year RTS metrics plus all-years aggregates as an xdggs L2 dataset.

    ``footprints`` are as :func:`read_footprints` returns them: their ``area_m2`` (recomputed
    in the equal-area CRS at ingest) is the area of each footprint that lies inside one cell;
    without that column it is computed here.

    Every cell of ``cells`` is present (zero where no RTS was mapped), so the labels hold the
    negatives that training needs. Note that a zero also means "not observed" where a DARTS
    year does not cover the cell.

    Parameters
    ----------
    footprints : geopandas.GeoDataFrame
        Footprints with year and geometry (and optionally area_m2) columns.
    cells : geopandas.GeoDataFrame
        Grid cells with cell_id, geometry and land_area_km2 columns.
    spec : GridSpec
        Grid of ``cells``; gives the xdggs attrs of ``cell_ids``.

    Returns
    -------
    xarray.Dataset
        ``rts_count``, ``rts_area_km2``, ``rts_density`` and ``rts_coverage`` over
        (cell_ids, year), their ``*_all_years`` aggregates over cell_ids, and
        ``land_area_km2``.
    """
    years = np.sort(footprints["year"].unique()).astype(np.int16)
    n_cells = len(cells)
    land = cells["land_area_km2"].to_numpy()
    cell_geoms = cells.geometry.reset_index(drop=True)
    geoms = footprints.geometry.reset_index(drop=True)

    known = footprints["area_m2"].to_numpy() / 1e6 if "area_m2" in footprints else None
    overlay = overlay_cells(geoms, cell_geoms, areas_km2=known)
    year_pos = np.searchsorted(years, footprints["year"].to_numpy())
    area = np.zeros((n_cells, len(years)))
    np.add.at(area, (overlay.cell, year_pos[overlay.polygon]), overlay.area_km2)
    inside = overlay.owner >= 0
    count = np.zeros((n_cells, len(years)), dtype=np.int32)
    np.add.at(count, (overlay.owner[inside], year_pos[inside]), 1)

    # All years: a slump of one footprint is that footprint; others are the union of theirs.
    slump = slump_ids(footprints) if len(footprints) else np.array([], dtype=np.int64)
    single = np.bincount(slump)[slump] == 1 if len(slump) else np.array([], dtype=bool)
    area_all = np.bincount(
        overlay.cell[single[overlay.polygon]],
        weights=overlay.area_km2[single[overlay.polygon]],
        minlength=n_cells,
    )
    owners_all = [overlay.owner[single]]
    if (~single).any():
        grouped = pd.Series(geoms[~single].to_numpy(), index=slump[~single]).groupby(level=0)
        extents = gpd.GeoSeries(
            [shapely.union_all(group.to_numpy()) for _, group in grouped], crs=geoms.crs
        )
        merged = overlay_cells(extents, cell_geoms)
        area_all += np.bincount(merged.cell, weights=merged.area_km2, minlength=n_cells)
        owners_all.append(merged.owner)
    owners = np.concatenate(owners_all)
    count_all = np.bincount(owners[owners >= 0], minlength=n_cells).astype(np.int32)

    per_1000 = 1000.0 / land
    dataset = xr.Dataset(
        {
            "rts_count": (("cell_ids", "year"), count),
            "rts_area_km2": (("cell_ids", "year"), area),
            "rts_density": (("cell_ids", "year"), count * per_1000[:, None]),
            "rts_coverage": (("cell_ids", "year"), area / land[:, None]),
            "rts_count_all_years": ("cell_ids", count_all),
            "rts_area_km2_all_years": ("cell_ids", area_all),
            "rts_density_all_years": ("cell_ids", count_all * per_1000),
            "rts_coverage_all_years": ("cell_ids", area_all / land),
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
        "land_area_km2": "km2",
    }
    for name, variable in dataset.data_vars.items():
        variable.attrs["units"] = units[str(name).removesuffix("_all_years")]
    dataset.attrs.update(
        source="DARTS RTS footprints",
        grid=spec.key,
        slump_matching="footprints overlapping across years form one slump",
    )
    return dataset


def footprint_area_in_cells_km2(footprints: gpd.GeoDataFrame, cells: gpd.GeoDataFrame) -> float:
    """Measure the total footprint area inside the cells, by another route than :func:`rts_labels`.

    The footprints (per year, so overlapping years add up as in the labels) are clipped to the
    dissolved union of the cells they touch, then measured in the equal-area projection; the
    asset check compares this with the sum of the per-cell labels.

    Parameters
    ----------
    footprints : geopandas.GeoDataFrame
        Footprints (EPSG:4326) of any years.
    cells : geopandas.GeoDataFrame
        Grid cells (EPSG:4326).

    Returns
    -------
    float
        Footprint area inside the cells in km^2, each year's footprints counted separately.
    """
    if footprints.empty:
        return 0.0
    geoms = footprints.geometry.to_numpy()
    touched = np.unique(shapely.STRtree(cells.geometry.to_numpy()).query(geoms)[1])
    region = shapely.union_all(cells.geometry.to_numpy()[touched])
    clipped = gpd.GeoSeries(shapely.intersection(geoms, region), crs=footprints.crs)
    return float(clipped.segmentize(0.01).to_crs(equal_area_crs(cells)).area.sum() / 1e6)
