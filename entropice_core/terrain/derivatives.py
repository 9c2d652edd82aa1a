"""Terrain derivatives of a projected DEM, tile by tile with a halo (docs/terrain.md).

Definitions (3 x 3 window ``a b c / d e f / g h i``, row 0 = north, cell sizes from the
raster's transform; formulas in docs/terrain.md):

- ``slope`` (degrees) and ``aspect`` (degrees clockwise from grid north, the downslope
  direction; NaN on flat cells) from Horn's (1981) gradient; ``northness`` and ``eastness``
  are the cosine and sine of the aspect (0 on flat cells), which average meaningfully.
- ``curvature_profile``, ``curvature_plan``, ``curvature_total`` (1/m) after Zevenbergen and
  Thorne (1987); ArcGIS and xarray-spatial report 100 times these values.
- ``tpi_<r>m`` (m): elevation minus the mean of the valid pixels whose centre lies within
  ``r`` metres (the centre excluded), after Weiss (2001).
- ``tri`` (m): Riley et al.'s (1999) square root of the summed squared differences to the 8
  neighbours; ``roughness`` (m): max - min of the 3 x 3 window.
- ``vrm_<n>`` (0-1): Sappington et al.'s (2007) vector ruggedness over ``n x n`` windows.

Nodata (NaN) propagates through the 3 x 3 operators and the raster's edge counts as nodata;
TPI and VRM average the valid pixels of their windows. Every output pixel is computed from
its own neighbourhood by the same operations wherever it lies in a tile, and window sums add
fixed-point integers (exact in any order) rather than running float sums, so a tiled result
equals the untiled one bit for bit.

On the CPU each 3 x 3 group runs as a compiled numba kernel and TPI/VRM as numpy array code;
the cupy backend runs the array code for everything (the same formulas, tested against the
kernels on the CPU).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any, Literal

import dask.array as da
import numba
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph
from dask.typing import Key
from pydantic import BaseModel, ConfigDict, Field, field_validator

from entropice_core.arrays import array_module
from entropice_core.config import ArrayBackend

Group = Literal["slope", "aspect", "curvature", "tri", "roughness", "tpi", "vrm"]
#: The derivative groups in output order.
GROUPS: tuple[Group, ...] = ("slope", "aspect", "curvature", "tri", "roughness", "tpi", "vrm")
#: Variables of the 3 x 3 groups (TPI and VRM give one per radius / window).
LOCAL = {
    "slope": ("slope",),
    "aspect": ("aspect", "northness", "eastness"),
    "curvature": ("curvature_profile", "curvature_plan", "curvature_total"),
    "tri": ("tri",),
    "roughness": ("roughness",),
}

UNITS = {
    "slope": "degrees",
    "aspect": "degrees clockwise from grid north (downslope direction)",
    "northness": "1",
    "eastness": "1",
    "curvature_profile": "1/m",
    "curvature_plan": "1/m",
    "curvature_total": "1/m",
    "tri": "m",
    "roughness": "m",
    "tpi": "m",
    "vrm": "1",
}


#: Window sums (TPI, VRM) add integers, so they are exact and independent of the tiling:
#: heights in units of 2**-10 m (about 1 mm), unit normals in units of 2**-24.
ELEVATION_BITS = 10
NORMAL_BITS = 24
#: Low bits of the packed TPI sums that hold the count of valid pixels (disks up to 2**20 px).
COUNT_BITS = 20
#: The array backends the derivatives run on (numpy on cpu, cupy on cuda).
TERRAIN_BACKENDS = ("numpy", "cupy")


class TerrainConfig(BaseModel):
    """Which neighbourhoods to use and how to tile the work."""

    model_config = ConfigDict(frozen=True)

    tpi_radii_m: tuple[float, ...] = Field(
        default=(160.0, 960.0),
        description="Radii (m) of the TPI disks; at 32 m a few hundred m to a few km.",
    )
    vrm_windows: tuple[int, ...] = Field(
        default=(3, 9), description="Odd window sizes (pixels) of the VRM."
    )
    chunk: int = Field(
        default=1024, ge=64, description="Edge (pixels) of the tiles processed at once."
    )
    strip_rows: int = Field(
        default=64,
        ge=1,
        description="Rows computed together within a tile on the CPU, so temporaries stay "
        "in cache (results do not depend on it).",
    )
    derivatives: tuple[Group, ...] = Field(
        default=GROUPS,
        description="Which derivatives to compute: 'slope', 'aspect' (with northness and "
        "eastness), 'curvature' (profile, plan, total), 'tri', 'roughness', 'tpi', 'vrm'.",
    )
    backend: ArrayBackend = Field(
        default="numpy",
        description="Array library (config.ArrayBackend): 'numpy' (device cpu) or 'cupy' "
        "(device cuda, needs the gpu extra); 'torch' is not supported here.",
    )

    @field_validator("backend", mode="before")
    @classmethod
    def _supported(cls, backend: str) -> str:
        if backend not in TERRAIN_BACKENDS:
            raise ValueError(
                f"terrain derivatives run on the array backends {', '.join(TERRAIN_BACKENDS)} "
                f"(devices cpu, cuda), not {backend!r}"
            )
        return backend

    @field_validator("vrm_windows")
    @classmethod
    def _odd(cls, windows: tuple[int, ...]) -> tuple[int, ...]:
        if any(w < 3 or w % 2 == 0 for w in windows):
            raise ValueError(f"VRM windows {windows} must be odd and at least 3")
        return windows

    @field_validator("tpi_radii_m")
    @classmethod
    def _positive(cls, radii: tuple[float, ...]) -> tuple[float, ...]:
        if any(r <= 0 for r in radii):
            raise ValueError(f"TPI radii {radii} must be positive (metres)")
        return radii

    def names(self) -> list[str]:
        """List the output variables in order.

        Returns
        -------
        list of str
            Variable names of the selected derivatives, e.g. ``slope``, ``tpi_160m``, ``vrm_3``.
        """
        variables = {
            **LOCAL,
            "tpi": tuple(f"tpi_{r:g}m" for r in self.tpi_radii_m),
            "vrm": tuple(f"vrm_{w}" for w in self.vrm_windows),
        }
        return [name for group in GROUPS if group in self.derivatives for name in variables[group]]

    def halo(self, dx: float, dy: float) -> int:
        """Count the pixels of context each tile needs on every side.

        Parameters
        ----------
        dx : float
            Pixel width in metres.
        dy : float
            Pixel height in metres.

        Returns
        -------
        int
            The halo: at least 1, enough for the largest TPI disk and VRM window.
        """
        tpi = [int(r // min(dx, dy)) for r in self.tpi_radii_m] if "tpi" in self.derivatives else []
        vrm = [w // 2 + 1 for w in self.vrm_windows] if "vrm" in self.derivatives else []
        return max([1, *tpi, *vrm])


def disk_rows(radius: float, dx: float, dy: float) -> list[tuple[int, int]]:
    """Describe the disk of pixels whose centre is within ``radius``, row by row.

    Parameters
    ----------
    radius : float
        Disk radius in metres.
    dx : float
        Pixel width in metres.
    dy : float
        Pixel height in metres.

    Returns
    -------
    list of tuple of int
        ``(row offset, half width)`` per row, row offsets ascending.
    """
    rows = []
    for j in range(-int(radius // dy), int(radius // dy) + 1):
        reach = radius * radius - (j * dy) ** 2
        half = int(np.sqrt(max(reach, 0.0)) // dx)
        while ((half + 1) * dx) ** 2 <= reach:
            half += 1
        while half > 0 and (half * dx) ** 2 > reach:
            half -= 1
        rows.append((j, half))
    return rows


def _row_cumsum(a: Any, xp: ModuleType) -> Any:
    """``c[..., j] = sum(a[..., :j])`` along the last axis."""
    c = xp.zeros((*a.shape[:-1], a.shape[-1] + 1), dtype=a.dtype)
    xp.cumsum(a, axis=-1, out=c[..., 1:])
    return c


def _disk_sum(
    a: Any, rows: list[tuple[int, int]], halo: int, shape: tuple[int, int], xp: ModuleType
) -> Any:
    """Sum ``a`` (``(ny + 2 halo, nx + 2 halo)``, integers) over a disk around each core pixel.

    Two lookups per disk row in the row-wise cumulative sums.
    """
    ny, nx = shape
    c = _row_cumsum(a, xp)
    out = xp.zeros((ny, nx), dtype=a.dtype)
    for j, half in rows:
        r = c[halo + j : halo + j + ny]
        out += r[:, halo + half + 1 : halo + half + 1 + nx]
        out -= r[:, halo - half : halo - half + nx]
    return out


def _summed_area(a: Any, xp: ModuleType) -> Any:
    """``t[..., i, j] = sum(a[..., :i, :j])`` (integers: exact in any order)."""
    table = xp.zeros((*a.shape[:-2], a.shape[-2] + 1, a.shape[-1] + 1), dtype=a.dtype)
    xp.cumsum(xp.cumsum(a, axis=-1), axis=-2, out=table[..., 1:, 1:])
    return table


def _box_sum(table: Any, width: int, trim: int) -> Any:
    """Sum ``width x width`` windows from a summed-area table.

    Only the windows that start ``trim`` pixels inside its array and fit ``trim`` pixels from
    its far edges.
    """
    n = table.shape[-2] - 1 - 2 * trim - width + 1
    m = table.shape[-1] - 1 - 2 * trim - width + 1
    r, c, w = trim, trim, width
    return (
        table[..., r + w : r + w + n, c + w : c + w + m]
        - table[..., r : r + n, c + w : c + w + m]
        - table[..., r + w : r + w + n, c : c + m]
        + table[..., r : r + n, c : c + m]
    )


def _fixed(a: Any, bits: int, xp: ModuleType) -> Any:
    """Convert ``a`` to integer units of ``2**-bits`` (NaN as 0): sums of these are exact."""
    return xp.rint(xp.where(xp.isnan(a), 0, a) * 2.0**bits).astype(xp.int64)


# The 3 x 3 groups on the CPU: one compiled kernel per group, each a plain loop over the core
# in float32 with branch-free NaN handling (x + (e - e) is NaN exactly where the centre e is),
# so LLVM can vectorise the arithmetic. Neighbour differences are taken first: neighbouring
# heights are close, so their float32 differences are exact (Sterbenz; heights within a factor
# of two) and only the small results are rounded. Arguments: the padded block z, its halo,
# float32 coefficients, then the outputs.
_KERNEL = numba.njit(cache=True, nogil=True, error_model="numpy")
_F = np.float32


@_KERNEL
def _gradient(
    z: np.ndarray, y: int, x: int, px: np.float32, py: np.float32
) -> tuple[np.float32, np.float32]:
    """Horn's p = dz/dx and q = dz/dy (east and north) at padded (y, x); NaN at a NaN centre."""
    a, b, c = z[y - 1, x - 1], z[y - 1, x], z[y - 1, x + 1]
    d, e, f = z[y, x - 1], z[y, x], z[y, x + 1]
    g, h, i = z[y + 1, x - 1], z[y + 1, x], z[y + 1, x + 1]
    p = ((c - a) + _F(2) * (f - d) + (i - g)) * px + (e - e)
    q = ((g - a) + _F(2) * (h - b) + (i - c)) * py
    return p, q


@_KERNEL
def _slope_kernel(
    z: np.ndarray, halo: int, px: np.float32, py: np.float32, slope: np.ndarray
) -> None:
    degrees = _F(180 / np.pi)
    for row in range(slope.shape[0]):
        for col in range(slope.shape[1]):
            p, q = _gradient(z, row + halo, col + halo, px, py)
            slope[row, col] = np.arctan(np.sqrt(p * p + q * q)) * degrees


@_KERNEL
def _aspect_kernel(
    z: np.ndarray,
    halo: int,
    px: np.float32,
    py: np.float32,
    aspect: np.ndarray,
    north: np.ndarray,
    east: np.ndarray,
) -> None:
    degrees, zero, nan = _F(180 / np.pi), _F(0), _F(np.nan)
    for row in range(aspect.shape[0]):
        for col in range(aspect.shape[1]):
            p, q = _gradient(z, row + halo, col + halo, px, py)
            s = np.sqrt(p * p + q * q)
            theta = np.arctan2(q, -p) * degrees
            turned = _F(450) - theta if theta > _F(90) else _F(90) - theta
            flat = s == zero
            aspect[row, col] = nan if flat else turned
            north[row, col] = zero if flat else q / s
            east[row, col] = zero if flat else -p / s


@_KERNEL
def _curvature_kernel(
    z: np.ndarray,
    halo: int,
    dxx: np.float32,
    dyy: np.float32,
    dxy: np.float32,
    gx: np.float32,
    hy: np.float32,
    profile: np.ndarray,
    plan: np.ndarray,
    total: np.ndarray,
) -> None:
    zero, half, two = _F(0), _F(0.5), _F(2)
    for row in range(total.shape[0]):
        y = row + halo
        for col in range(total.shape[1]):
            x = col + halo
            a, b, c = z[y - 1, x - 1], z[y - 1, x], z[y - 1, x + 1]
            d, e, f = z[y, x - 1], z[y, x], z[y, x + 1]
            g, h, i = z[y + 1, x - 1], z[y + 1, x], z[y + 1, x + 1]
            dd = ((d - e) + (f - e)) * half * dxx
            ee = ((b - e) + (h - e)) * half * dyy
            ff = ((c - a) + (g - i)) * dxy
            gg, hh = (f - d) * gx, (b - h) * hy
            g2, h2, gh = gg * gg, hh * hh, gg * hh
            norm = g2 + h2
            level = norm == zero
            norm = _F(1) if level else norm
            bend = -two * (dd * g2 + ee * h2 + ff * gh) / norm
            turn = two * (dd * h2 + ee * g2 - ff * gh) / norm
            profile[row, col] = zero + (e - e) if level else bend
            plan[row, col] = zero + (e - e) if level else turn
            total[row, col] = -two * (dd + ee)


@_KERNEL
def _tri_kernel(z: np.ndarray, halo: int, tri: np.ndarray) -> None:
    for row in range(tri.shape[0]):
        y = row + halo
        for col in range(tri.shape[1]):
            x = col + halo
            e = z[y, x]
            total = _F(0)
            for j in range(-1, 2):
                for i in range(-1, 2):
                    step = z[y + j, x + i] - e
                    total += step * step
            tri[row, col] = np.sqrt(total)


@_KERNEL
def _roughness_kernel(z: np.ndarray, halo: int, roughness: np.ndarray) -> None:
    for row in range(roughness.shape[0]):
        y = row + halo
        for col in range(roughness.shape[1]):
            x = col + halo
            e = z[y, x]
            hi = lo = e
            invalid = e - e
            for j in range(-1, 2):
                for i in range(-1, 2):
                    v = z[y + j, x + i]
                    hi, lo = max(hi, v), min(lo, v)
                    invalid += v - v  # NaN if any pixel of the window is
            roughness[row, col] = hi - lo + invalid


@_KERNEL
def _all_nan(z: np.ndarray) -> bool:
    """Whether every pixel is NaN, stopping at the first that is not (usually the first)."""
    for v in z.flat:  # noqa: SIM110 (numba compiles no generators)
        if v == v:
            return False
    return True


def _local_cpu(z: np.ndarray, halo: int, dx: float, dy: float, groups: list[Group]) -> np.ndarray:
    """Compute the 3 x 3 groups ``(variables, ny, nx)`` of the core of a padded float32 block."""
    ny, nx = z.shape[0] - 2 * halo, z.shape[1] - 2 * halo
    out = np.empty((sum(len(LOCAL[g]) for g in groups), ny, nx), dtype=np.float32)
    px, py = _F(1 / (8 * dx)), _F(1 / (8 * dy))
    k = 0
    for group in groups:
        if group == "slope":
            _slope_kernel(z, halo, px, py, out[k])
        elif group == "aspect":
            _aspect_kernel(z, halo, px, py, out[k], out[k + 1], out[k + 2])
        elif group == "curvature":
            dxx, dyy, dxy = _F(1 / dx**2), _F(1 / dy**2), _F(1 / (4 * dx * dy))
            gx, hy = _F(1 / (2 * dx)), _F(1 / (2 * dy))
            _curvature_kernel(z, halo, dxx, dyy, dxy, gx, hy, out[k], out[k + 1], out[k + 2])
        elif group == "tri":
            _tri_kernel(z, halo, out[k])
        else:
            _roughness_kernel(z, halo, out[k])
        k += len(LOCAL[group])
    return out


def _block(z: Any, halo: int, dx: float, dy: float, config: TerrainConfig, xp: ModuleType) -> Any:
    """Compute the derivatives ``(variables, ny, nx)`` float32 of the core of a padded block."""
    ny, nx = z.shape[0] - 2 * halo, z.shape[1] - 2 * halo
    groups = set(config.derivatives)
    out: list[Any] = []

    def near(i: int, j: int, grow: int = 0) -> Any:
        """Take the window shifted by (row i, col j) over the core grown by ``grow`` pixels."""
        r, c = halo - grow + i, halo - grow + j
        return z[r : r + ny + 2 * grow, c : c + nx + 2 * grow]

    with np.errstate(invalid="ignore", divide="ignore"):
        # Horn's gradient over the core plus a ring wide enough for the VRM windows.
        ring = max([0, *(w // 2 for w in config.vrm_windows)]) if "vrm" in groups else 0
        core = (slice(ring, ring + ny), slice(ring, ring + nx))
        if groups & {"slope", "aspect", "vrm"}:
            a, b, c = near(-1, -1, ring), near(-1, 0, ring), near(-1, 1, ring)
            d, e, f = near(0, -1, ring), near(0, 0, ring), near(0, 1, ring)
            g, h, i = near(1, -1, ring), near(1, 0, ring), near(1, 1, ring)
            p = ((c + 2 * f + i) - (a + 2 * d + g)) * xp.float32(1 / (8 * dx))
            q = ((g + 2 * h + i) - (a + 2 * b + c)) * xp.float32(1 / (8 * dy))
            s2 = xp.where(xp.isnan(e), xp.float32(np.nan), p * p + q * q)  # none at nodata
            s = xp.sqrt(s2)
            flat = s == 0
            east = xp.where(flat, xp.float32(0), -p / s)
            north = xp.where(flat, xp.float32(0), q / s)
        if "slope" in groups:
            out.append(xp.degrees(xp.arctan(s[core])))
        if "aspect" in groups:
            theta = xp.degrees(xp.arctan2(q[core], -p[core]))
            aspect = xp.where(theta > 90, 450 - theta, 90 - theta)
            out += [xp.where(flat[core], xp.float32(np.nan), aspect), north[core], east[core]]

        a, b, c = near(-1, -1), near(-1, 0), near(-1, 1)
        d, e, f = near(0, -1), near(0, 0), near(0, 1)
        g, h, i = near(1, -1), near(1, 0), near(1, 1)
        if "curvature" in groups:  # Zevenbergen & Thorne
            dd = ((d + f) * xp.float32(0.5) - e) * xp.float32(1 / dx**2)
            ee = ((b + h) * xp.float32(0.5) - e) * xp.float32(1 / dy**2)
            ff = (c + g - a - i) * xp.float32(1 / (4 * dx * dy))
            gg = (f - d) * xp.float32(1 / (2 * dx))
            hh = (b - h) * xp.float32(1 / (2 * dy))
            g2, h2, gh = gg * gg, hh * hh, gg * hh
            norm = g2 + h2
            level = (norm == 0) & ~xp.isnan(e)  # profile and plan are 0 on level ground
            norm = xp.where(level, xp.float32(1), norm)
            out.append(xp.where(level, 0, -2 * (dd * g2 + ee * h2 + ff * gh) / norm))
            out.append(xp.where(level, 0, 2 * (dd * h2 + ee * g2 - ff * gh) / norm))
            out.append(-2 * (dd + ee))
        if "tri" in groups:  # Riley
            squares = (a - e) ** 2
            for n in (b, c, d, f, g, h, i):
                squares += (n - e) ** 2
            out.append(xp.sqrt(squares))
        if "roughness" in groups:
            hi = lo = a
            for n in (b, c, d, e, f, g, h, i):
                hi, lo = xp.maximum(hi, n), xp.minimum(lo, n)
            out.append(hi - lo)

        if "tpi" in groups:
            # Heights and valid flags packed in one integer: sum * 2**COUNT_BITS + count.
            packed = (_fixed(z, ELEVATION_BITS, xp) << COUNT_BITS) + ~xp.isnan(z)
            centre = packed[halo : halo + ny, halo : halo + nx]
            for radius in config.tpi_radii_m:
                total = _disk_sum(packed, disk_rows(radius, dx, dy), halo, (ny, nx), xp) - centre
                count = total & ((1 << COUNT_BITS) - 1)
                mean = (total >> COUNT_BITS) / xp.where(count > 0, count, np.nan)
                out.append(e - mean * 2.0**-ELEVATION_BITS)

        if "vrm" in groups:  # Sappington: unit normals summed over the window
            cos_s = 1 / xp.sqrt(1 + s2)
            sin_s = s * cos_s
            ok = ~xp.isnan(s)
            normals = xp.stack([sin_s * east, sin_s * north, cos_s, ok.astype(xp.float32)])
            normals = _fixed(xp.where(ok, normals, 0), NORMAL_BITS, xp)
            table = _summed_area(normals, xp)  # one table for every window size
            for w in config.vrm_windows:
                sums = _box_sum(table, w, ring - w // 2) * 2.0**-NORMAL_BITS
                length = xp.sqrt(sums[0] ** 2 + sums[1] ** 2 + sums[2] ** 2)
                out.append(xp.where(ok[core], 1 - length / sums[3], np.nan))
    return xp.stack([x.astype(xp.float32, copy=False) for x in out])


def derivatives_array(
    z: np.ndarray, halo: int, dx: float, dy: float, config: TerrainConfig = TerrainConfig()
) -> np.ndarray:
    """Compute the derivatives of the core of a NaN-padded block ``z``.

    The CPU path works in strips of ``config.strip_rows`` rows; the cupy path moves the block
    to the GPU and computes it at once.

    Parameters
    ----------
    z : numpy.ndarray
        2-D elevations (m) with ``halo`` pixels of context on each side (NaN outside the
        raster); rows run north to south.
    halo : int
        Context pixels on each side (at least :meth:`TerrainConfig.halo`).
    dx : float
        Pixel width in metres.
    dy : float
        Pixel height in metres.
    config : TerrainConfig
        Derivatives, neighbourhoods and backend.

    Returns
    -------
    numpy.ndarray
        float32 ``(variables, ny, nx)`` in the order of :meth:`TerrainConfig.names`.
    """
    if _all_nan(np.asarray(z)):  # ocean or outside the data: nothing to compute
        shape = (len(config.names()), z.shape[0] - 2 * halo, z.shape[1] - 2 * halo)
        return np.full(shape, np.nan, dtype=np.float32)
    if config.backend == "cupy":
        cp = array_module("cupy", "TerrainConfig(backend='cupy')")
        return cp.asnumpy(_block(cp.asarray(z, dtype=cp.float32), halo, dx, dy, config, cp))
    z = np.asarray(z, dtype=np.float32)
    ny = z.shape[0] - 2 * halo
    parts = []
    local = [g for g in GROUPS if g in LOCAL and g in config.derivatives]
    if local:  # compiled kernels for the 3 x 3 groups
        parts.append(_local_cpu(z, halo, float(dx), float(dy), local))
    windows = config.model_copy(update={"derivatives": tuple(set(config.derivatives) - set(LOCAL))})
    if windows.derivatives:  # TPI and VRM by strips, so temporaries stay in cache
        strips = [
            _block(z[r : min(r + config.strip_rows, ny) + 2 * halo], halo, dx, dy, windows, np)
            for r in range(0, ny, config.strip_rows)
        ]
        parts.append(np.concatenate(strips, axis=1))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def pixel_size(dem: xr.DataArray) -> tuple[float, float]:
    """Read the cell sizes in metres from the raster's transform.

    Parameters
    ----------
    dem : xarray.DataArray
        Raster with a rioxarray CRS and transform.

    Returns
    -------
    tuple of float
        ``(dx, dy)``, both positive.

    Raises
    ------
    ValueError
        If the CRS is missing or not projected in metres, or the grid is rotated (the
        message names the fix).
    """
    name = dem.name or "the DEM"
    crs = dem.rio.crs
    if crs is None:
        raise ValueError(
            f"{name} has no CRS: terrain derivatives need a projected CRS in metres to know "
            "the cell size; set it with dem.rio.write_crs('EPSG:3413') (ArcticDEM's CRS)"
        )
    if not crs.is_projected or crs.linear_units not in ("metre", "meter", "m"):
        raise ValueError(
            f"{name} is in {crs} ({crs.linear_units or 'degrees'}): reproject it to a metric "
            "CRS first (ArcticDEM tiles are EPSG:3413), e.g. dem.rio.reproject('EPSG:3413')"
        )
    transform = dem.rio.transform()
    if transform.b != 0 or transform.d != 0:
        raise ValueError(f"{name} is rotated ({transform}); derivatives need a north-up grid")
    return abs(transform.a), abs(transform.e)


def _map_tiles(data: da.Array, halo: int, compute: Callable, n_out: int) -> da.Array:
    """Apply ``compute`` to every block of ``data`` padded with ``halo`` pixels of its neighbours.

    NaN outside the raster, one task per block; the result has chunks ``(n_out, *data.chunks)``.

    ``dask.array.overlap`` does the same with about ten tasks and two copies per block; here
    each task receives its (up to) 3 x 3 neighbouring blocks and copies the window once, which
    halves the time of the fast 3 x 3 derivatives. Blocks must be at least ``halo`` wide.
    """
    name = "terrain-" + tokenize(data, halo, compute, n_out)
    rows, cols = data.numblocks
    graph: dict[Key, Any] = {
        (name, 0, i, j): (
            _padded_call,
            [
                [
                    (data.name, r, c) if 0 <= r < rows and 0 <= c < cols else None
                    for c in (j - 1, j, j + 1)
                ]
                for r in (i - 1, i, i + 1)
            ],
            halo,
            compute,
        )
        for i in range(rows)
        for j in range(cols)
    }
    # dask.array.Array does not match dask's own DaskCollection protocol for mypy
    # (``__dask_scheduler__`` is a staticmethod object there, a plain callable here).
    layers = HighLevelGraph.from_collections(
        name,
        graph,
        dependencies=[data],  # type: ignore[list-item]
    )
    return da.Array(layers, name, chunks=((n_out,), *data.chunks), dtype=np.float32)


def _padded_call(blocks: list[list[np.ndarray | None]], halo: int, compute: Callable) -> Any:
    """Call ``compute`` on the centre block padded from its neighbours.

    ``blocks`` are the 3 x 3 blocks around it, None outside the raster.
    """
    centre = blocks[1][1]
    assert centre is not None  # _map_tiles always passes the block itself
    ny, nx = centre.shape
    z = np.full((ny + 2 * halo, nx + 2 * halo), np.nan, dtype=np.float32)

    def span(position: int, n: int, size: int) -> tuple[slice, slice]:
        """Slice (source, target) along one axis for the previous (0), own (1) or next (2) block.

        The block has ``size`` pixels, the own block ``n``.
        """
        if position == 0:
            return slice(size - halo, size), slice(0, halo)
        if position == 1:
            return slice(0, size), slice(halo, halo + n)
        return slice(0, halo), slice(halo + n, n + 2 * halo)

    for r, row in enumerate(blocks):
        for c, block in enumerate(row):
            if block is not None:
                (source_rows, rows), (source_cols, cols) = (
                    span(r, ny, block.shape[0]),
                    span(c, nx, block.shape[1]),
                )
                z[rows, cols] = block[source_rows, source_cols]
    return compute(z)


def terrain_derivatives(
    dem: xr.DataArray, config: TerrainConfig = TerrainConfig(), water: xr.DataArray | None = None
) -> xr.Dataset:
    """Compute every derivative of ``dem`` as a lazy (Dask) Dataset on the DEM's grid.

    Tiles of ``config.chunk`` pixels are computed with a halo of :meth:`TerrainConfig.halo`
    pixels, so memory stays bounded and results do not depend on the tiling.

    Parameters
    ----------
    dem : xarray.DataArray
        2-D elevation raster with a projected CRS in metres (nodata as NaN or its nodata
        value).
    config : TerrainConfig
        Derivatives, neighbourhoods, tiling and backend.
    water : xarray.DataArray, optional
        Boolean raster on the same grid; its True pixels are masked like nodata first.

    Returns
    -------
    xarray.Dataset
        One float32 variable per name of :meth:`TerrainConfig.names`, with units, on the
        DEM's grid and CRS.

    Raises
    ------
    ValueError
        If the DEM is not 2-D (y, x) or its CRS or grid is unusable (see :func:`pixel_size`).
    """
    dx, dy = pixel_size(dem)
    ydim, xdim = dem.rio.y_dim, dem.rio.x_dim
    if dem.dims != (ydim, xdim):
        raise ValueError(f"the DEM must be 2-D ({ydim}, {xdim}); it has dims {dem.dims}")
    nodata = dem.rio.nodata if dem.rio.nodata is not None else dem.rio.encoded_nodata
    z = dem.astype(np.float32)
    if nodata is not None and not np.isnan(nodata):
        z = z.where(dem != nodata)
    if water is not None:
        z = z.where(~water.astype(bool).data)
    north_up = dem.rio.transform().e < 0
    data = z.data if isinstance(z.data, da.Array) else da.from_array(z.data)
    data = data.rechunk(config.chunk)
    if not north_up:
        data = data[::-1]
    halo = config.halo(dx, dy)
    chunks = tuple(da.overlap.ensure_minimum_chunksize(halo, c) for c in data.chunks)
    names = config.names()
    compute = partial(derivatives_array, halo=halo, dx=dx, dy=dy, config=config)
    out = _map_tiles(data.rechunk(chunks), halo, compute, len(names))
    if not north_up:
        out = out[:, ::-1]
    out = out.rechunk((1, config.chunk, config.chunk))  # regular chunks for Zarr
    dataset = xr.Dataset(coords={ydim: dem[ydim], xdim: dem[xdim]})
    for index, name in enumerate(names):
        variable = xr.DataArray(out[index], dims=(ydim, xdim))
        variable.attrs["units"] = UNITS[name] if name in UNITS else UNITS[name.split("_")[0]]
        dataset[name] = variable
    dataset.attrs.update(
        pixel_size_m=[dx, dy], halo_pixels=halo, terrain_config=config.model_dump_json()
    )
    return dataset.rio.write_crs(dem.rio.crs)
