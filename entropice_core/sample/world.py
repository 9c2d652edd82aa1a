"""The latent world of the sample region: one set of fields every source is drawn from.

The fields live on a 200 m grid in EPSG:3413 (ArcticDEM's CRS) that covers the sample box plus
half a degree on every side (enough for the ERA5 grid's outer cells). The geography loosely
follows the real Peel Plateau / Mackenzie Delta: the Richardson Mountains as a north-south ridge
in the west, the ice-rich Peel Plateau east of them cut by incised valleys, the low lake-studded
delta and Tuktoyaktuk uplands further east, and the Beaufort Sea (Mackenzie Bay) in the north.
Ground ice is a hidden field: no source shows it directly, as in reality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyproj
import rasterio.features
import scipy.fft
import shapely
from affine import Affine
from scipy import ndimage
from scipy.special import expit

from entropice_core.config import SAMPLE_REGION_BBOX
from entropice_core.sample.resample import cubic_weights, resample

#: CRS of the latent grid and of ArcticDEM.
POLAR_CRS = "EPSG:3413"
#: Latent grid spacing in metres.
LATENT_RES = 200.0
#: Degrees added around the box so the ERA5 cells beyond the box still have terrain.
MARGIN_DEG = 0.5
#: Random stream of the world (the other sources use their own streams of the same seed).
WORLD_STREAM = 1

# Main rivers (lon, lat vertices): the Mackenzie from the south-east, the Peel across the plateau.
_RIVERS: tuple[tuple[tuple[float, float], ...], ...] = (
    ((-133.2, 66.0), (-133.7, 67.0), (-134.2, 67.5), (-134.6, 67.9), (-135.0, 68.4),
     (-135.3, 68.9), (-135.6, 69.6)),
    ((-136.4, 66.0), (-135.6, 66.9), (-135.1, 67.3), (-134.6, 67.75)),
)  # fmt: skip


@dataclass(frozen=True)
class LatentGrid:
    """A north-up raster grid in EPSG:3413.

    Attributes
    ----------
    left, top : float
        Outer edges (metres).
    res : float
        Cell size (metres).
    width, height : int
        Columns and rows.
    """

    left: float
    top: float
    res: float
    width: int
    height: int

    @property
    def transform(self) -> Affine:
        """Affine transform from (col, row) to EPSG:3413 metres."""
        return Affine(self.res, 0.0, self.left, 0.0, -self.res, self.top)

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape ``(height, width)``."""
        return (self.height, self.width)


@dataclass(frozen=True, eq=False)
class LatentWorld:
    """Static latent fields on ``grid`` (all arrays have ``grid.shape``).

    Attributes
    ----------
    seed : int
        Seed the world was drawn from.
    bbox : tuple of float
        Sample box ``(minlon, minlat, maxlon, maxlat)``.
    grid : LatentGrid
        The 200 m grid of every field.
    lon, lat : numpy.ndarray
        Lon/lat of each cell centre (degrees).
    elevation : numpy.ndarray
        Surface height in metres (lakes flat at their level, the sea at -2 m).
    sea, lake, aoi : numpy.ndarray
        Open ocean, lakes, and cells whose centre lies inside the sample box (boolean).
    lake_potential : numpy.ndarray
        The smooth field whose positive part is ``lake``.
    lake_level : numpy.ndarray
        The nearest lake's surface height everywhere (lets the DEM writer flatten lakes exactly).
    ground_ice : numpy.ndarray
        Excess ground-ice content, 0-1 (hidden; drives RTS).
    slope : numpy.ndarray
        Slope in degrees at the latent resolution.
    downslope : numpy.ndarray
        Unit vectors ``(dx, dy)`` of steepest descent in EPSG:3413, shape ``(2, *grid.shape)``.
    water_distance : numpy.ndarray
        Metres to the nearest stream, river, lake or sea cell.
    roughness : numpy.ndarray
        Amplitude in metres of the sub-grid relief the DEM writer adds at 64 m.
    """

    seed: int
    bbox: tuple[float, float, float, float]
    grid: LatentGrid
    lon: np.ndarray
    lat: np.ndarray
    elevation: np.ndarray
    sea: np.ndarray
    lake: np.ndarray
    lake_potential: np.ndarray
    lake_level: np.ndarray
    aoi: np.ndarray
    ground_ice: np.ndarray
    slope: np.ndarray
    downslope: np.ndarray
    water_distance: np.ndarray
    roughness: np.ndarray


def to_polar(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project lon/lat (EPSG:4326) to EPSG:3413 metres.

    Parameters
    ----------
    lon, lat : numpy.ndarray
        Coordinates in degrees.

    Returns
    -------
    x, y : numpy.ndarray
        EPSG:3413 coordinates in metres.
    """
    tr = pyproj.Transformer.from_crs("EPSG:4326", POLAR_CRS, always_xy=True)
    return tr.transform(lon, lat)


def to_lonlat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unproject EPSG:3413 metres to lon/lat (EPSG:4326).

    Parameters
    ----------
    x, y : numpy.ndarray
        EPSG:3413 coordinates in metres.

    Returns
    -------
    lon, lat : numpy.ndarray
        Coordinates in degrees.
    """
    tr = pyproj.Transformer.from_crs(POLAR_CRS, "EPSG:4326", always_xy=True)
    return tr.transform(x, y)


def polar_box(bbox: tuple[float, float, float, float]) -> shapely.Polygon:
    """Turn a lon/lat box into a polygon in EPSG:3413, densified so its edges stay curved.

    Parameters
    ----------
    bbox : tuple of float
        ``(minlon, minlat, maxlon, maxlat)`` in degrees.

    Returns
    -------
    shapely.Polygon
        The box in EPSG:3413 metres (edges densified every 0.02 degrees before projecting).
    """
    box = shapely.segmentize(shapely.box(*bbox), 0.02)
    return shapely.transform(box, lambda xy: np.column_stack(to_polar(xy[:, 0], xy[:, 1])))


def latent_grid(
    bbox: tuple[float, float, float, float] = SAMPLE_REGION_BBOX, res: float = LATENT_RES
) -> LatentGrid:
    """Lay out the 200 m grid covering ``bbox`` plus :data:`MARGIN_DEG`.

    Parameters
    ----------
    bbox : tuple of float, optional
        ``(minlon, minlat, maxlon, maxlat)`` in degrees; the sample region by default.
    res : float, optional
        Cell size in metres (:data:`LATENT_RES`; coarser for the larger scale regions).

    Returns
    -------
    LatentGrid
        Grid in EPSG:3413 with its edges snapped outwards to whole kilometres.
    """
    minlon, minlat, maxlon, maxlat = bbox
    outer = (minlon - MARGIN_DEG, minlat - MARGIN_DEG, maxlon + MARGIN_DEG, maxlat + MARGIN_DEG)
    minx, miny, maxx, maxy = polar_box(outer).bounds
    left, bottom = np.floor(minx / 1000) * 1000, np.floor(miny / 1000) * 1000
    right, top = np.ceil(maxx / 1000) * 1000, np.ceil(maxy / 1000) * 1000
    return LatentGrid(
        left=float(left),
        top=float(top),
        res=res,
        width=round((right - left) / res),
        height=round((top - bottom) / res),
    )


def upsample(coarse: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """Upsample (cubic) a field computed on cells ``factor`` times larger than ``shape``'s.

    Coarse cell ``j`` covers fine cells ``j*factor ... (j+1)*factor - 1``.

    Parameters
    ----------
    coarse : numpy.ndarray
        2-D coarse field.
    factor : int
        Fine cells per coarse cell along each axis.
    shape : tuple of int
        Shape of the fine field.

    Returns
    -------
    numpy.ndarray
        float32 field of ``shape``.
    """
    rows, cols = (
        cubic_weights((np.arange(n) + 0.5) / factor - 0.5, m)
        for n, m in zip(shape, coarse.shape, strict=True)
    )
    return resample(coarse, rows, cols).astype(np.float32)


def spectral_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    res: float,
    wavelengths: tuple[float, float],
    beta: float = 1.0,
) -> np.ndarray:
    """Draw band-limited fractal noise with zero mean and unit standard deviation.

    White noise is filtered in the Fourier domain with amplitude ``k**-beta`` between the
    shortest and longest ``wavelengths`` (metres), which gives terrain-like self-similar relief
    in one FFT instead of summing octaves. Smooth fields are computed on a coarser grid (at
    least four cells per shortest wavelength) and upsampled, which is much cheaper.

    Parameters
    ----------
    rng : numpy.random.Generator
        Random source.
    shape : tuple of int
        Shape of the field.
    res : float
        Cell size (metres).
    wavelengths : tuple of float
        Shortest and longest wavelength kept (metres).
    beta : float, default 1.0
        Spectral slope of the amplitude.

    Returns
    -------
    numpy.ndarray
        float32 noise field of ``shape``.
    """
    shortest, longest = wavelengths
    factor = max(1, int(shortest // (4 * res)))
    coarse = shape if factor == 1 else (-(-shape[0] // factor) + 1, -(-shape[1] // factor) + 1)
    white = rng.standard_normal(coarse, dtype=np.float32)
    ky = np.fft.fftfreq(coarse[0], d=res * factor)[:, None]
    kx = np.fft.rfftfreq(coarse[1], d=res * factor)[None, :]
    k = np.hypot(ky, kx).astype(np.float32)
    band = np.clip(k, 1.0 / longest, None) ** -beta
    band /= 1.0 + (k * shortest) ** 8  # smooth low-pass, no ringing
    field = scipy.fft.irfft2(scipy.fft.rfft2(white, workers=2) * band, s=coarse, workers=2)
    field = (field - field.mean()) / field.std()
    return field if factor == 1 else upsample(field, factor, shape)


def _distance_to(mask: np.ndarray, res: float) -> np.ndarray:
    """Metres from every cell to the nearest True cell of ``mask``."""
    return (ndimage.distance_transform_edt(~mask) * res).astype(np.float32)


def _nearest(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the nearest True cell of ``mask``, for every cell."""
    rows, cols = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
    return rows, cols


def _zero_crossings(field: np.ndarray) -> np.ndarray:
    """Cells where ``field`` changes sign towards a neighbour: thin, connected curves."""
    lines = np.zeros(field.shape, dtype=bool)
    lines[:, :-1] |= field[:, :-1] * field[:, 1:] < 0
    lines[:-1, :] |= field[:-1, :] * field[1:, :] < 0
    return lines


def _river_lines(grid: LatentGrid) -> np.ndarray:
    """Rasterised main rivers on the latent grid."""
    lines = [
        shapely.transform(
            shapely.LineString(r), lambda xy: np.column_stack(to_polar(xy[:, 0], xy[:, 1]))
        )
        for r in _RIVERS
    ]
    return rasterio.features.rasterize(
        [(shapely.segmentize(line, 500.0), 1) for line in lines],
        out_shape=grid.shape,
        transform=grid.transform,
        all_touched=True,
        dtype="uint8",
    ).astype(bool)


def _lonlat(grid: LatentGrid, factor: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Lon/lat (float32) of every cell centre, projected on a coarser grid and upsampled.

    Both vary smoothly over the box, so cubic interpolation from 2 km is exact to better than
    a metre at a fraction of the cost of projecting millions of points.
    """
    ny, nx = (-(-n // factor) + 1 for n in grid.shape)
    x = grid.left + grid.res * factor * (np.arange(nx) + 0.5)
    y = grid.top - grid.res * factor * (np.arange(ny) + 0.5)
    lon, lat = to_lonlat(*np.meshgrid(x, y))
    return upsample(lon, factor, grid.shape), upsample(lat, factor, grid.shape)


def _valley_profile(distance: np.ndarray, half_width: np.ndarray) -> np.ndarray:
    """Incision shape: 1 at the thalweg, falling to 0 at ``half_width`` (a concave V)."""
    return (1.0 - np.clip(distance / half_width, 0.0, 1.0)) ** 1.7


def _gradient(z: np.ndarray, res: float) -> tuple[np.ndarray, np.ndarray]:
    """Elevation gradient ``(dz/dx, dz/dy)`` in projected coordinates (y up, rows run south)."""
    dz_drow, dz_dx = np.gradient(z, res)
    return dz_dx, -dz_drow


def _slope(dz_dx: np.ndarray, dz_dy: np.ndarray) -> np.ndarray:
    """Slope in degrees."""
    return np.degrees(np.arctan(np.hypot(dz_dx, dz_dy)))


def _downslope(dz_dx: np.ndarray, dz_dy: np.ndarray) -> np.ndarray:
    """Return unit vectors of steepest descent, shape ``(2, ...)``; flat cells point south."""
    grad = np.hypot(dz_dx, dz_dy)
    flat = grad == 0
    safe = np.where(flat, 1.0, grad)
    return np.stack([np.where(flat, 0.0, -dz_dx / safe), np.where(flat, -1.0, -dz_dy / safe)])


def build_world(
    seed: int = 42,
    bbox: tuple[float, float, float, float] = SAMPLE_REGION_BBOX,
    res: float = LATENT_RES,
) -> LatentWorld:
    """Draw the latent world for ``seed``: terrain, lakes, sea, ground ice and derived fields.

    Deterministic: the same seed and box always give identical arrays.

    Parameters
    ----------
    seed : int, default 42
        Seed (the world uses its own random stream of it).
    bbox : tuple of float, optional
        ``(minlon, minlat, maxlon, maxlat)``; the sample region by default.
    res : float, optional
        Latent cell size in metres; a coarser grid keeps a large region's world as cheap as
        the sample's (the DEM's 64 m texture is added per tile either way).

    Returns
    -------
    LatentWorld
        Every latent field on the grid from :func:`latent_grid`.
    """
    rng = np.random.default_rng([WORLD_STREAM, seed])
    grid = latent_grid(bbox, res)
    res, shape = grid.res, grid.shape
    lon, lat = _lonlat(grid)
    km_per_deg_lon = 111.32 * np.cos(np.radians(lat))

    n_regional = spectral_noise(rng, shape, res, (4_000.0, 60_000.0), beta=1.2)
    n_rough = spectral_noise(rng, shape, res, (400.0, 12_000.0), beta=1.1)
    n_front = spectral_noise(rng, shape, res, (8_000.0, 80_000.0), beta=1.5)
    n_trunk = spectral_noise(rng, shape, res, (15_000.0, 40_000.0), beta=1.0)
    n_trib = spectral_noise(rng, shape, res, (4_000.0, 12_000.0), beta=1.0)
    n_lake = spectral_noise(rng, shape, res, (1_200.0, 5_000.0), beta=1.5)
    n_ice = spectral_noise(rng, shape, res, (3_000.0, 40_000.0), beta=1.2)

    # Coastline: Mackenzie Bay dips south to ~69.0 N between ~137.5 and 135 W.
    coast_lat = 69.02 + 0.3 * (1.0 - np.exp(-(((lon + 136.3) / 1.3) ** 4))) + 0.04 * n_front
    sea = lat > coast_lat
    coast_factor = 10
    coast_km = upsample(
        _distance_to(sea[::coast_factor, ::coast_factor], res * coast_factor / 1000.0),
        coast_factor,
        shape,
    )

    # Richardson Mountains: a ridge along ~136.6 W that bends west (British Mountains) up north.
    axis_lon = -136.6 - 2.5 * np.clip(lat - 68.5, 0.0, None) + 0.15 * n_front
    east_km = (lon - axis_lon) * km_per_deg_lon
    ridge_w = np.exp(-((east_km / 20.0) ** 2))
    mountains = ridge_w * (600.0 + 120.0 * n_regional + 70.0 * n_rough)

    # Peel Plateau between the mountain front and an eastern escarpment, south of the delta.
    escarp_lon = -134.85 + 0.35 * np.clip(67.3 - lat, 0.0, None) + 0.12 * n_front
    plateau_w = (
        expit((escarp_lon - lon) / 0.04)
        * expit((68.05 - lat + 0.05 * n_front) / 0.03)
        * expit((east_km - 4.0) / 3.0)
    )
    plateau = 280.0 + 320.0 * np.exp(-np.clip(east_km, 0.0, None) / 30.0)
    west_upland = 450.0 * expit(-(east_km + 12.0) / 6.0) * expit((68.9 - lat) / 0.15)

    # Lowlands: delta near sea level, Tuktoyaktuk uplands and Colville Hills further east.
    lowland = (
        25.0
        + 55.0 * expit((lon + 134.2) / 0.06)
        + 70.0 * np.clip((lon + 134.0) / 2.5, 0.0, 1.0)
        + 160.0 * expit((67.4 - lat) / 0.12) * expit((lon + 134.4) / 0.1)
    )
    delta_w = (
        expit((lon + 136.0) / 0.05) * expit((-134.45 - lon) / 0.05) * expit((lat - 67.85) / 0.04)
    )
    z = lowland * (1.0 - plateau_w) + plateau * plateau_w + west_upland
    z = z + mountains + 25.0 * n_regional * np.clip(z / 200.0, 0.2, 1.5)
    z = z * (1.0 - delta_w) + (3.0 + 2.0 * n_regional) * delta_w
    z = z * (1.0 - np.exp(-coast_km / 12.0)) + 1.5  # the coastal plain grades to the shore

    # Incised drainage: main rivers, trunk valleys and tributaries (noise zero-crossings).
    # Each cell is cut by its nearest channel, deepest where the land stands high above the
    # lowland, so the plateau gets canyons and the delta almost none.
    rivers = _river_lines(grid)
    trunk = _zero_crossings(n_trunk) & ~sea & ~rivers
    tribs = _zero_crossings(n_trib) & ~sea & (n_trunk > 0) & ~rivers & ~trunk
    channel = rivers | trunk | tribs
    kind = np.where(rivers, 0, np.where(trunk, 1, 2))  # index into the tables below
    half_width = np.array([2_000.0, 1_100.0, 500.0], dtype=np.float32)
    strength = np.array([1.2, 1.0, 0.6], dtype=np.float32)
    near_r, near_c = _nearest(channel)
    near_kind = kind[near_r, near_c]
    rr, cc = np.indices(shape, sparse=True)
    channel_dist = np.hypot(near_r - rr, near_c - cc).astype(np.float32) * res
    depth = np.clip(0.3 * (z - 20.0), 0.0, 140.0)
    z = z - depth * strength[near_kind] * _valley_profile(channel_dist, half_width[near_kind])

    slope0 = _slope(*_gradient(z, res))
    tuk = expit((lon + 134.3) / 0.1) * expit((lat - 68.3) / 0.1)
    # Thermokarst and delta lakes: blobs of a smooth field on flat low ground. The field is
    # kept (not just its sign) so the DEM writer can draw smooth shorelines at 32 m.
    lakeyness = 1.3 * delta_w + 0.9 * tuk + 0.4 * expit((120.0 - z) / 20.0)
    lake_potential = n_lake + lakeyness - 1.6 - 0.6 * np.clip(slope0 - 2.0, 0.0, None)
    lake_potential = np.where(sea, -1.0, lake_potential).astype(np.float32)
    lake = lake_potential > 0
    labels, n_lakes = ndimage.label(lake)
    levels = ndimage.minimum(z, labels, np.arange(1, n_lakes + 1))
    z = np.where(lake, np.concatenate([[0.0], levels])[labels], z)
    z = np.where(sea, -2.0, z).astype(np.float32)
    lake_r, lake_c = _nearest(lake)
    lake_level = z[lake_r, lake_c]

    gradient = _gradient(z, res)
    glaciated = expit((east_km - 8.0) / 4.0)
    ice_logit = -1.4 + 1.4 * glaciated + 1.2 * plateau_w + 0.3 * delta_w - 2.0 * ridge_w
    ground_ice = np.where(sea | lake, 0.0, expit(1.8 * (ice_logit + 0.8 * n_ice)))

    aoi = rasterio.features.geometry_mask(
        [polar_box(bbox)], out_shape=shape, transform=grid.transform, invert=True
    )
    roughness = np.where(lake | sea, 0.0, 0.5 + 2.5 * ridge_w + 0.01 * np.clip(z, 0.0, None))
    return LatentWorld(
        seed=seed,
        bbox=(bbox[0], bbox[1], bbox[2], bbox[3]),
        grid=grid,
        lon=lon,
        lat=lat,
        elevation=z,
        sea=sea,
        lake=lake,
        lake_potential=lake_potential,
        lake_level=lake_level,
        aoi=aoi,
        ground_ice=ground_ice.astype(np.float32),
        slope=_slope(*gradient),
        downslope=_downslope(*gradient),
        water_distance=_distance_to(channel | lake | sea, res),
        roughness=roughness.astype(np.float32),
    )
