"""Exact zonal statistics of a projected raster on several grid levels in one pass.

The per-level engine (``aggregators.aggregate_raster``) reads the raster once per grid level and
sorts every cell's values for its quantiles. This module reads each band once for *all* levels
and sorts each pixel's value once, whatever the number of levels:

- **Atoms.** Every pixel has, per level, the cell its centre lies in (or none): the pixel-centre
  partition of the level, with edge pixels counted as members only where they touch that cell
  (as :func:`~entropice_core.spatial.pixelmap.build_cell_pixel_map` does). Pixels with the same
  cell at every level form one *atom*: the overlay of all levels' pixel-centre partitions (about
  three atoms per cell of the finest level on the sample region). Atoms are found once per
  raster grid (:func:`build_level_map`); a cell of any level is a union of atoms, whether or not
  the grid nests (HEALPix does, H3 does not: an H3 child straddling its parent's boundary just
  falls into two atoms).
- **Moments.** Per band, one compiled pass gathers each atom's valid values (NaN is nodata),
  their count, mean, sum of squared deviations (two-pass), min and max; a cell's pixel-centre
  moments merge its atoms with Chan's pairwise rule, in atom order. The exact coverage enters
  as a correction: each edge entry (pixel, cell, coverage ``c``) adds weight
  ``c - [centre of the pixel in the cell]`` (negative where a centre pixel is only partly
  inside), so the weights become exactly the coverage fractions exactextract uses.
- **Quantiles.** Each atom's valid values are sorted once (numpy's SIMD sort, two threads); a
  cell's order statistics are selected from the union of its atoms' sorted runs by bisection
  over the order-preserving integer keys of float32 (32 steps, each one binary search per run),
  without merging or copying.

- **Windows.** Memory grows with the pixels of the window read (about
  :data:`PASS_BYTES_PER_PIXEL` bytes each). Where the window that holds the cells exceeds a
  memory budget, the cells are shared out among square windows of pixels, each cell to the
  one window that holds the centre of its bounds; each window reads the pixels its own cells
  cover and runs the pass above on them alone (:func:`plan_windows`). A cell's pixels,
  coverages and sorted values are then those of the single pass, so its statistics are too
  (moments to rounding, the rest exactly). With a dask.distributed client current, the
  windows run as tasks on its workers, sized to their memory limits.

Definitions (as ``docs/aggregation.md``): with coverage ``c`` of each (pixel, cell) pair and the
valid pixels of the cell, ``mean = sum(c x) / sum(c)``, ``std = sqrt(sum(c (x - mean)^2) /
sum(c))``, ``sum = sum(c x)``, ``count = sum(c)``, ``min``/``max`` over pixels with ``c > 0``,
``valid_fraction = sum(c) / W`` (``W`` the cell's area in pixels, parts outside the raster
included); ``median`` and ``quantile`` over the valid pixels whose centre lies in the cell,
unweighted, numpy's linear rule. Projected rasters only (every pixel weighs the same); lon/lat
rasters use the per-level engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import geopandas as gpd
import numba
import numpy as np
import rasterio.features
import rasterio.windows
import shapely
import xarray as xr

from entropice_core.config import Device, GridSpec, resolve_backend
from entropice_core.spatial.aggregators import STATISTICS, AggregationConfig, CellMoments
from entropice_core.spatial.pixelmap import (
    MIN_COVERAGE,
    RasterGrid,
    _edge_coverage,
    _outside_area,
    _planar_profile,
    _polygonal,
    project_cells,
    rasterize_pixels,
)

#: Threads sorting atoms (numpy's sort releases the GIL).
SORT_THREADS = 2
#: Threads rasterising grid levels while the atoms are refined.
LABEL_THREADS = 2
#: Peak bytes per pixel of one window's pass, an upper bound: while the atoms are built, the
#: atom ids and two level rasters (int32) and the pixel order (int64, then int32); then per
#: band, the band reduced and the next one read ahead, the packed scratch (float32) and the
#: order (int32); with room for the reader's copies. In the 4x scale run (docs/scaling.md)
#: workers of 5.6 GiB running windows sized by it peaked at 2.3 GiB.
PASS_BYTES_PER_PIXEL = 32
#: Share of a worker's memory limit a window may use (the rest: the worker's own memory,
#: results, and room below dask's spill and pause thresholds).
WORKER_MEMORY_SHARE = 0.5


@dataclass(frozen=True)
class LevelEdges:
    """The cells of one grid level and the exact coverage of their edge pixels.

    Attributes
    ----------
    cell_ids
        The cells' ids in input order (cell index ``i`` is ``cell_ids[i]``).
    pixel, cell
        Flat pixel index and cell index of each edge entry (pixels crossed by a cell boundary).
    coverage
        Share of the pixel's area inside the cell (exact, in the raster's CRS).
    delta
        ``coverage`` minus 1 where the pixel's centre lies in the cell (it is already counted
        with weight 1 in its atom), else ``coverage``.
    total_weight
        Area of each whole cell in pixels, parts outside the raster included.
    """

    cell_ids: np.ndarray
    pixel: np.ndarray
    cell: np.ndarray
    coverage: np.ndarray
    delta: np.ndarray
    total_weight: np.ndarray


@dataclass(frozen=True)
class LevelMap:
    """The atoms of several grid levels on one projected raster grid (see the module docstring).

    Attributes
    ----------
    grid
        The raster grid.
    levels
        Grid level keys, in the order of ``atom_cell``'s rows.
    order
        Flat pixel indices grouped by atom (raster order within an atom); pixels in no cell at
        any level are left out.
    atom_start
        Offsets of the atoms in ``order`` (``n_atoms + 1``).
    atom_cell
        ``(levels, atoms)``: the cell index of each atom at each level, -1 for none.
    edges
        Per level, its cells and edge entries.
    """

    grid: RasterGrid
    levels: tuple[str, ...]
    order: np.ndarray
    atom_start: np.ndarray
    atom_cell: np.ndarray
    edges: tuple[LevelEdges, ...]

    @property
    def n_atoms(self) -> int:
        """Number of atoms."""
        return len(self.atom_start) - 1


def _level_labels(cells: gpd.GeoDataFrame, grid: RasterGrid) -> tuple[np.ndarray, LevelEdges]:
    """Rasterise one level: the pixel-centre cell of every pixel (0 none, else index + 1)."""
    geoms = project_cells(cells, grid)
    t = grid.transform
    scale = np.array([1 / t.a, 1 / t.e])
    shift = np.array([-t.c / t.a, -t.f / t.e])
    pix = shapely.transform(geoms, lambda xy: xy * scale + shift)
    inside = shapely.clip_by_rect(pix, 0.0, 0.0, float(grid.width), float(grid.height))
    inside = shapely.orient_polygons(_polygonal(inside), exterior_cw=True)
    outside = _outside_area(geoms, pix, inside, grid)
    label = rasterize_pixels(inside, grid.height, grid.width).ravel()
    pixel, cell, fracs = _edge_coverage(inside, grid.width, grid.height, [_planar_profile])
    centre_label = label[pixel]
    label[pixel] = 0  # an edge pixel is a member only through an entry of the cell it touches
    keep = fracs[0] > MIN_COVERAGE
    pixel, cell, centre_label = pixel[keep], cell[keep], centre_label[keep]
    coverage = np.minimum(fracs[0][keep], 1.0)
    centre = centre_label == cell + 1
    label[pixel[centre]] = cell[centre] + 1
    delta = coverage - centre
    n = len(cells)
    total = _count_labels(label, n)[1:] + np.bincount(cell, weights=delta, minlength=n) + outside
    order = np.argsort(pixel, kind="stable")
    edges = LevelEdges(
        cell_ids=np.asarray(cells["cell_id"], dtype=np.uint64),
        pixel=pixel[order].astype(np.int64),
        cell=cell[order].astype(np.int32),
        coverage=coverage[order],
        delta=delta[order],
        total_weight=total.astype(np.float64),
    )
    return label, edges


@numba.njit(cache=True, nogil=True)
def _count_labels(label: np.ndarray, n_labels: int) -> np.ndarray:
    """``np.bincount`` of int32 labels in ``0..n_labels`` without its int64 copy (3x faster)."""
    count = np.zeros(n_labels + 1, dtype=np.int64)
    for p in range(len(label)):
        count[label[p]] += 1
    return count


@numba.njit(cache=True, nogil=True)
def _combine(atom: np.ndarray, label: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Refine the atoms by one more level's labels, in place; return the (atom, label) keys.

    New atom ids follow first appearance in raster order, so the result is deterministic.
    """
    ids = numba.typed.Dict.empty(numba.int64, numba.int64)
    keys = []  # type: ignore[var-annotated]  # numba infers int64
    last_key, last_id = np.int64(-1), np.int64(-1)
    base = np.int64(n_labels + 1)
    for p in range(len(atom)):
        key = np.int64(atom[p]) * base + label[p]
        if key != last_key:
            found = ids.get(key, -1)
            if found < 0:
                found = len(keys)
                ids[key] = found
                keys.append(key)
            last_key, last_id = key, found
        atom[p] = last_id
    out = np.empty(len(keys), dtype=np.int64)
    for i in range(len(keys)):
        out[i] = keys[i]
    return atom, out


@numba.njit(cache=True)
def _group(atom: np.ndarray, keep: np.ndarray, n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """Group the pixels by atom (stable counting sort), leaving out atoms with ``keep`` False."""
    count = np.zeros(n_atoms + 1, dtype=np.int64)
    for p in range(len(atom)):
        if keep[atom[p]]:
            count[atom[p] + 1] += 1
    start = np.cumsum(count)
    fill = start[:-1].copy()
    order = np.empty(start[-1], dtype=np.int64)
    for p in range(len(atom)):
        a = atom[p]
        if keep[a]:
            order[fill[a]] = p
            fill[a] += 1
    return order, start


def build_level_map(levels: Mapping[str, gpd.GeoDataFrame], grid: RasterGrid) -> LevelMap:
    """Build the atoms of several grid levels on a projected raster grid.

    Parameters
    ----------
    levels : mapping of str to geopandas.GeoDataFrame
        Grid level key (``GridSpec.key``) to its ``grid_cells`` (cell_id, EPSG:4326 geometry).
    grid : RasterGrid
        A projected raster grid.

    Returns
    -------
    LevelMap
        Pixels grouped by atom, each atom's cell per level and each level's edge entries.

    Raises
    ------
    ValueError
        If the raster is lon/lat (use ``aggregators.aggregate_raster``).
    """
    if grid.is_geographic:
        raise ValueError("the multi-level pass needs a projected raster; use aggregate_raster")
    atom = np.zeros(grid.width * grid.height, dtype=np.int32)  # atoms number far below 2**31
    atom_cell = np.zeros((0, 1), dtype=np.int32)
    edges = []
    frames = list(levels.values())
    # Levels are rasterised on two threads (GDAL releases the GIL), at most two ahead of the
    # refinement, which takes them in order: two label rasters in memory, not nine.
    with ThreadPoolExecutor(LABEL_THREADS) as pool:
        ahead = [pool.submit(_level_labels, cells, grid) for cells in frames[:LABEL_THREADS]]
        for i, cells in enumerate(frames):
            label, level_edges = ahead.pop(0).result()
            if i + LABEL_THREADS < len(frames):
                ahead.append(pool.submit(_level_labels, frames[i + LABEL_THREADS], grid))
            edges.append(level_edges)
            atom, keys = _combine(atom, label, len(cells))
            del label
            base = len(cells) + 1
            atom_cell = np.vstack(
                [atom_cell[:, keys // base], (keys % base - 1).astype(np.int32)[None, :]]
            )
    keep = (atom_cell >= 0).any(axis=0)
    order, start = _group(atom, keep, atom_cell.shape[1])
    used = np.flatnonzero(keep)
    return LevelMap(
        grid=grid,
        levels=tuple(levels),
        order=order.astype(np.int32) if len(atom) < 2**31 else order,
        atom_start=np.r_[start[used], start[-1]],
        atom_cell=atom_cell[:, used],
        edges=tuple(edges),
    )


@numba.njit(cache=True, nogil=True, parallel=True)
def atom_moments(
    values: np.ndarray, order: np.ndarray, start: np.ndarray, packed: np.ndarray
) -> np.ndarray:
    """Gather each atom's valid values to the front of its run in ``packed``; reduce them.

    Returns ``(5, atoms)``: count, mean, sum of squared deviations from the mean (two passes
    in float64), min and max (NaN where none is valid).
    """
    n_atoms = len(start) - 1
    out = np.empty((5, n_atoms))
    for a in numba.prange(n_atoms):
        s, n = start[a], 0
        total = 0.0
        for j in range(start[a], start[a + 1]):
            x = values[order[j]]
            if x == x:
                packed[s + n] = x
                n += 1
                total += np.float64(x)
        mean = total / n if n > 0 else np.nan
        m2, low, high = 0.0, np.inf, -np.inf
        for j in range(s, s + n):
            x = np.float64(packed[j])
            m2 += (x - mean) * (x - mean)
            low = min(low, x)
            high = max(high, x)
        out[0, a], out[1, a], out[2, a] = n, mean, m2
        out[3, a] = low if n > 0 else np.nan
        out[4, a] = high if n > 0 else np.nan
    return out


@numba.njit(cache=True, nogil=True)
def level_moments(
    atoms: np.ndarray,
    atom_cell: np.ndarray,
    values: np.ndarray,
    pixel: np.ndarray,
    cell: np.ndarray,
    coverage: np.ndarray,
    delta: np.ndarray,
    n_cells: int,
) -> np.ndarray:
    """Merge atoms into cells (Chan's rule, atom order) and apply the edge corrections.

    Returns ``(5, cells)``: weight ``sum(c)``, mean, ``sum(c (x - mean)^2)``, min, max over
    valid pixels with ``c > 0`` (``weight`` 0 and NaN where none).
    """
    n = np.zeros(n_cells)
    mean = np.zeros(n_cells)
    m2 = np.zeros(n_cells)
    low = np.full(n_cells, np.inf)
    high = np.full(n_cells, -np.inf)
    for a in range(atoms.shape[1]):
        c, na = atom_cell[a], atoms[0, a]
        if c < 0 or na == 0:
            continue
        if n[c] == 0:
            n[c], mean[c], m2[c] = na, atoms[1, a], atoms[2, a]
        else:
            total = n[c] + na
            d = atoms[1, a] - mean[c]
            mean[c] += d * na / total
            m2[c] += atoms[2, a] + d * d * n[c] * na / total
            n[c] = total
        low[c] = min(low[c], atoms[3, a])
        high[c] = max(high[c], atoms[4, a])
    # Corrections around the shift k (the centre mean, or the first valid edge value).
    k = mean.copy()
    seen = n > 0
    sw = np.zeros(n_cells)
    sd = np.zeros(n_cells)
    sdd = np.zeros(n_cells)
    for e in range(len(pixel)):
        x = np.float64(values[pixel[e]])
        if x != x:
            continue
        c = cell[e]
        if not seen[c]:
            k[c], seen[c] = x, True
        w, d = delta[e], x - k[c]
        sw[c] += w
        sd[c] += w * d
        sdd[c] += w * d * d
        if coverage[e] > 0:
            low[c] = min(low[c], x)
            high[c] = max(high[c], x)
    out = np.empty((5, n_cells))
    for c in range(n_cells):
        w = n[c] + sw[c]
        if w <= 0 or not seen[c]:
            out[0, c], out[1, c], out[2, c] = 0.0, np.nan, np.nan
            out[3, c], out[4, c] = np.nan, np.nan
            continue
        shift = sd[c] / w
        out[0, c] = w
        out[1, c] = k[c] + shift
        out[2, c] = max(m2[c] + sdd[c] - w * shift * shift, 0.0)
        out[3, c], out[4, c] = low[c], high[c]
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def to_keys(bits: np.ndarray) -> None:
    """Turn float32 bit patterns (``int32`` view, no NaN) into order-preserving keys, in place.

    Negative floats map to ``-(magnitude bits)``, so -0.0 and +0.0 share the key 0 and a run
    sorted as floats stays sorted as keys.
    """
    for j in numba.prange(len(bits)):
        if bits[j] < 0:
            bits[j] = -(bits[j] & 0x7FFFFFFF)


def from_keys(keys: Any, xp: ModuleType = np) -> Any:
    """Return the float32 values of order-preserving keys (the inverse of :func:`to_keys`).

    The arrays are ``xp``'s: numpy, or cupy for the sorted engine.
    """
    keys = xp.asarray(keys, dtype=xp.int64)
    bits = xp.where(keys >= 0, keys, (-keys) | np.int64(-(2**31)))
    return bits.astype(xp.int32).view(xp.float32)


@numba.njit(cache=True, nogil=True)
def _select(keys, run_start, run_n, atoms, k, low, high) -> np.int64:
    """Find the ``k``-th smallest (0-based) key of the union of sorted runs, by bisection."""
    if len(atoms) == 1:
        return np.int64(keys[run_start[atoms[0]] + k])
    lo, hi = np.int64(low), np.int64(high)
    while lo < hi:
        mid = lo + (hi - lo) // 2
        count = 0
        for a in atoms:
            s = run_start[a]
            count += np.searchsorted(keys[s : s + run_n[a]], mid, side="right")  # type: ignore[assignment]
        if count >= k + 1:
            hi = mid
        else:
            lo = mid + 1
    return lo


@numba.njit(cache=True, nogil=True)
def _next(keys, run_start, run_n, atoms, key, k) -> np.int64:
    """Return the ``k``-th smallest key (0-based) given that ``key`` is the ``(k - 1)``-th.

    One binary search per run instead of a bisection: ``key`` itself if more than ``k`` keys
    are at most ``key``, else the smallest key of any run above it.
    """
    count = 0
    smallest = np.int64(2**40)
    for a in atoms:
        s, n = run_start[a], run_n[a]
        j = np.searchsorted(keys[s : s + n], key, side="right")
        count += j
        if j < n:
            smallest = min(smallest, np.int64(keys[s + j]))
    return np.int64(key) if count > k else smallest


@numba.njit(cache=True, nogil=True, parallel=True)
def level_order_statistics(
    keys: np.ndarray,
    run_start: np.ndarray,
    run_n: np.ndarray,
    cell_start: np.ndarray,
    cell_atoms: np.ndarray,
    levels: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the two order statistics around each quantile of each cell (numpy's linear rule).

    ``cell_atoms[cell_start[c]:cell_start[c + 1]]`` are the atoms of cell ``c``; atom ``a``'s
    sorted valid values are the keys ``keys[run_start[a]:run_start[a] + run_n[a]]``.
    Returns the keys below and above ``(levels, cells)`` and the interpolation weight ``t``
    (NaN for cells without a valid value).
    """
    n_cells = len(cell_start) - 1
    below_key = np.zeros((len(levels), n_cells), dtype=np.int64)
    above_key = np.zeros((len(levels), n_cells), dtype=np.int64)
    weight = np.full((len(levels), n_cells), np.nan)
    for c in numba.prange(n_cells):
        mine = cell_atoms[cell_start[c] : cell_start[c + 1]]
        mine = mine[run_n[mine] > 0]
        if len(mine) == 0:
            continue
        n = 0
        low, high = np.int64(2**40), np.int64(-(2**40))
        for a in mine:
            n += run_n[a]
            low = min(low, np.int64(keys[run_start[a]]))
            high = max(high, np.int64(keys[run_start[a] + run_n[a] - 1]))
        for i in range(len(levels)):
            position = (n - 1) * levels[i]
            below = np.int64(np.floor(position))
            above = min(below + 1, n - 1)
            below_key[i, c] = _select(keys, run_start, run_n, mine, below, low, high)
            above_key[i, c] = below_key[i, c]
            if above != below:
                above_key[i, c] = _next(keys, run_start, run_n, mine, below_key[i, c], above)
            weight[i, c] = position - below
    return below_key, above_key, weight


def level_quantiles(
    keys: np.ndarray,
    run_start: np.ndarray,
    run_n: np.ndarray,
    cell_start: np.ndarray,
    cell_atoms: np.ndarray,
    levels: np.ndarray,
) -> np.ndarray:
    """Quantiles ``(levels, cells)`` by numpy's linear rule; see :func:`level_order_statistics`."""
    below, above, t = level_order_statistics(keys, run_start, run_n, cell_start, cell_atoms, levels)
    a = from_keys(below).astype(np.float64).reshape(below.shape)
    b = from_keys(above).astype(np.float64).reshape(above.shape)
    diff = b - a
    with np.errstate(invalid="ignore"):
        out = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)
    return np.where(np.isnan(t), np.nan, out)


def _sort_runs(packed: np.ndarray, start: np.ndarray, count: np.ndarray) -> None:
    """Sort each atom's valid values in place, atoms shared out between threads."""

    def work(atoms: Iterable[int]) -> None:
        for a in atoms:
            if count[a] > 1:
                packed[start[a] : start[a] + count[a]].sort()

    atoms = np.arange(len(count))
    with ThreadPoolExecutor(SORT_THREADS) as pool:
        list(pool.map(work, [atoms[i::SORT_THREADS] for i in range(SORT_THREADS)]))


@dataclass(frozen=True)
class _Band:
    """One band's per-level results: ``(5, cells)`` moments and ``(levels, cells)`` quantiles."""

    moments: list[np.ndarray]
    quantiles: list[np.ndarray]


def _read_band(raster: xr.Dataset, name: str) -> np.ndarray:
    """Read one band into memory as flat float32.

    Lazily indexed (as ``io.assets.load_dataset`` opens a raster) zarr reads the window's
    chunks concurrently itself; Dask arrays are computed on the threaded scheduler.
    """
    values = raster[name].data
    if hasattr(values, "compute"):
        values = values.compute(scheduler="threads")
    return np.ascontiguousarray(values, dtype=np.float32).ravel()


def _reduce_band(
    values: np.ndarray, lmap: LevelMap, levels: Sequence[float], packed: np.ndarray
) -> _Band:
    """Reduce one band (flat float32, NaN nodata) on every level of ``lmap``.

    ``packed`` is scratch space of ``len(lmap.order)`` float32, reused from band to band.
    """
    atoms = atom_moments(values, lmap.order, lmap.atom_start, packed)
    count = atoms[0].astype(np.int64)
    start = lmap.atom_start[:-1]
    if levels:
        _sort_runs(packed, start, count)
        to_keys(packed.view(np.int32))
    q = np.asarray(levels, dtype=np.float64)
    moments, quantiles = [], []
    for i, edges in enumerate(lmap.edges):
        n_cells = len(edges.cell_ids)
        cells_of = lmap.atom_cell[i]
        moments.append(
            level_moments(
                atoms, cells_of, values, edges.pixel, edges.cell, edges.coverage, edges.delta,
                n_cells,
            )
        )  # fmt: skip
        if not levels:
            quantiles.append(np.zeros((0, n_cells)))
            continue
        member = np.flatnonzero(cells_of >= 0)
        by_cell = member[np.argsort(cells_of[member], kind="stable")]
        cell_start = np.searchsorted(cells_of[by_cell], np.arange(n_cells + 1))
        quantiles.append(
            level_quantiles(
                packed.view(np.int32), start, count, cell_start, by_cell.astype(np.int64), q
            )
        )
    return _Band(moments, quantiles)


#: The two implementations of a band's reduction (see :func:`aggregate_levels`).
Engine = Literal["compiled", "sorted"]


def pass_engine(device: str, engine: str | None = None) -> str | None:
    """Resolve a (device, engine) pair to the array library of the sorted engine.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        Where the bands are reduced.
    engine : {"compiled", "sorted"}, optional
        None: compiled on the CPU, sorted on the GPU.

    Returns
    -------
    str or None
        ``numpy`` or ``cupy`` for the sorted engine; None for the compiled one.

    Raises
    ------
    ValueError
        For unknown names, or the compiled engine on ``cuda``.
    """
    backend = resolve_backend(device)
    if engine is None:
        engine = "compiled" if device == "cpu" else "sorted"
    if engine not in ("compiled", "sorted"):
        raise ValueError(f"unknown engine {engine!r}: use 'compiled' or 'sorted'")
    if engine == "compiled" and device != "cpu":
        raise ValueError("the compiled engine runs on the CPU; on 'cuda' use engine='sorted'")
    return None if engine == "compiled" else backend


def crop_to_cells(raster: xr.Dataset, levels: Mapping[str, gpd.GeoDataFrame]) -> xr.Dataset:
    """Return the window of a projected raster that holds every cell of ``levels``.

    Pixels outside every cell take no part in any statistic, so a pass over the window gives
    the same results (the same atoms in the same order) as one over the whole raster, at the
    cost of the window: an area of interest costs what it covers.

    Parameters
    ----------
    raster : xarray.Dataset
        2-D variables on one projected grid (rioxarray CRS).
    levels : mapping of str to geopandas.GeoDataFrame
        Grid level key to its ``grid_cells``.

    Returns
    -------
    xarray.Dataset
        The raster cut to the cells' bounds (whole pixels, one pixel of margin), unchanged
        where the cells cover it all or there are none.
    """
    window = cells_window(RasterGrid.from_xarray(raster), levels)
    return raster if window is None else raster.rio.isel_window(window)


def cells_window(
    grid: RasterGrid, levels: Mapping[str, gpd.GeoDataFrame]
) -> rasterio.windows.Window | None:
    """Return the window of ``grid`` that holds every cell of ``levels`` (:func:`crop_to_cells`).

    Parameters
    ----------
    grid : RasterGrid
        A projected raster grid.
    levels : mapping of str to geopandas.GeoDataFrame
        Grid level key to its ``grid_cells``.

    Returns
    -------
    rasterio.windows.Window or None
        Whole pixels around the cells' bounds, one pixel of margin; None where the cells cover
        the whole grid or there are none.
    """
    found = [shapely.bounds(project_cells(cells, grid)) for cells in levels.values() if len(cells)]
    if not found:
        return None
    bounds = np.concatenate(found)
    inverse = ~grid.transform
    cols, rows = inverse @ (
        np.array([np.nanmin(bounds[:, 0]), np.nanmax(bounds[:, 2])]),
        np.array([np.nanmax(bounds[:, 3]), np.nanmin(bounds[:, 1])]),
    )
    col0, col1 = (
        int(max(np.floor(cols.min()) - 1, 0)),
        int(min(np.ceil(cols.max()) + 1, grid.width)),
    )
    row0, row1 = (
        int(max(np.floor(rows.min()) - 1, 0)),
        int(min(np.ceil(rows.max()) + 1, grid.height)),
    )
    if (col0, row0, col1, row1) == (0, 0, grid.width, grid.height):
        return None
    return rasterio.windows.Window(col0, row0, max(col1 - col0, 0), max(row1 - row0, 0))


def default_memory_budget() -> int:
    """Return the bytes one window's pass may use here: half of the machine's memory.

    Returns
    -------
    int
        Half of the physical memory (``psutil``).
    """
    import psutil

    return int(psutil.virtual_memory().total // 2)


def cluster_memory_budget(client) -> int:
    """Return the bytes one window may use on the workers of a dask.distributed ``client``.

    :data:`WORKER_MEMORY_SHARE` of the smallest worker memory limit, less what that worker
    already holds, shared among its threads (each may run a window).

    Parameters
    ----------
    client : distributed.Client
        A client with workers.

    Returns
    -------
    int
        Bytes per window; :func:`default_memory_budget` where the workers have no limit.
    """
    budgets = []
    for worker in client.scheduler_info(n_workers=-1)["workers"].values():
        limit = worker.get("memory_limit") or 0
        if not limit:
            continue
        held = worker.get("metrics", {}).get("memory", 0)
        usable = max(WORKER_MEMORY_SHARE * limit - held, WORKER_MEMORY_SHARE * limit / 4)
        budgets.append(int(usable / max(worker.get("nthreads", 1), 1)))
    return min(budgets) if budgets else default_memory_budget()


def _pixel_bounds(cells: gpd.GeoDataFrame, grid: RasterGrid) -> np.ndarray:
    """Bounds of each cell in (fractional) pixel columns and rows: ``(cells, 4)``."""
    if not len(cells):
        return np.zeros((0, 4))
    bounds = shapely.bounds(project_cells(cells, grid))
    inverse = ~grid.transform
    col0, row0 = inverse @ (bounds[:, 0], bounds[:, 3])
    col1, row1 = inverse @ (bounds[:, 2], bounds[:, 1])
    out = np.column_stack([col0, row0, col1, row1])
    return np.where(np.isfinite(out), out, 0.0)


def plan_windows(
    raster: xr.Dataset, levels: Mapping[str, gpd.GeoDataFrame], memory_budget: int
) -> list[dict[str, np.ndarray]] | None:
    """Share the cells of every level out among windows of pixels that fit a memory budget.

    Square core windows tile ``raster``; each cell goes to the one core window that holds
    the centre of its bounds, and a window reads the pixels its cells cover (its core plus
    at most half the largest cell on each side). The core side is chosen so that this read
    area at :data:`PASS_BYTES_PER_PIXEL` fits ``memory_budget``.

    Parameters
    ----------
    raster : xarray.Dataset
        2-D variables on one projected grid (rioxarray CRS), cut to the cells
        (:func:`crop_to_cells`).
    levels : mapping of str to geopandas.GeoDataFrame
        Grid level key to its ``grid_cells``.
    memory_budget : int
        Bytes one window's pass may use.

    Returns
    -------
    list of dict of str to numpy.ndarray, or None
        Per window with cells, each level's cell positions (rows of its frame, in order);
        None where the whole raster fits the budget (one pass, no windows).

    Raises
    ------
    ValueError
        If the budget cannot hold even the largest cell's pixels.
    """
    grid = RasterGrid.from_xarray(raster)
    pixels = grid.width * grid.height
    fits = memory_budget // PASS_BYTES_PER_PIXEL
    if pixels <= fits:
        return None
    bounds = {key: _pixel_bounds(cells, grid) for key, cells in levels.items()}
    extent = max(
        (float(np.max(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))) for b in bounds.values()
         if len(b)),
        default=0.0,
    )  # fmt: skip
    side = int(np.sqrt(fits)) - int(np.ceil(extent)) - 2
    if side < max(extent, 1):
        raise ValueError(
            f"a memory budget of {memory_budget / 2**30:.2f} GiB holds {fits:,} pixels per "
            f"window, too few for cells of up to {extent:,.0f} pixels across: give the pass "
            "more memory (larger workers) or leave the coarsest levels to aggregate_raster"
        )
    n_rows, n_cols = -(-grid.height // side), -(-grid.width // side)
    windows: dict[int, dict[str, np.ndarray]] = {}
    for key, b in bounds.items():
        col = np.clip(((b[:, 0] + b[:, 2]) / 2 // side).astype(np.int64), 0, n_cols - 1)
        row = np.clip(((b[:, 1] + b[:, 3]) / 2 // side).astype(np.int64), 0, n_rows - 1)
        window = row * n_cols + col
        order = np.argsort(window, kind="stable")
        starts = np.searchsorted(window[order], np.arange(n_rows * n_cols + 1))
        for w in np.flatnonzero(np.diff(starts)):
            windows.setdefault(int(w), {})[key] = order[starts[w] : starts[w + 1]]
    return [windows[w] for w in sorted(windows)]


def aggregate_levels(
    raster: xr.Dataset,
    levels: Mapping[str, gpd.GeoDataFrame],
    config: AggregationConfig = AggregationConfig(),
    *,
    level_map: LevelMap | None = None,
    memory_budget: int | None = None,
    device: Device = "cpu",
    engine: Engine | None = None,
) -> dict[str, xr.Dataset]:
    """Compute exact zonal statistics of every variable of ``raster`` on several grid levels.

    Each variable is read once into memory (by zarr, or dask's threads), only in the window
    that holds the cells (:func:`crop_to_cells`), and reduced on all levels; see the module
    docstring for the method and the definitions. Results equal
    ``aggregators.aggregate_raster`` on each level (moments to rounding, the rest exactly).
    Where that window exceeds ``memory_budget``, the cells are shared out among smaller
    windows (:func:`plan_windows`), run as tasks on the current dask.distributed client if
    there is one, else one after the other here; the results are the same. With a client of
    worker processes current, even one window runs on a worker.

    Parameters
    ----------
    raster : xarray.Dataset
        2-D ``(y, x)`` variables on one projected grid (rioxarray CRS), NaN as nodata.
    levels : mapping of str to geopandas.GeoDataFrame
        Grid level key to its ``grid_cells``.
    config : AggregationConfig, optional
        The statistics (any of ``aggregators.STATISTICS``) and quantile levels.
    level_map : LevelMap, optional
        Atoms built earlier for the same levels on the raster's window that holds their cells
        (:func:`crop_to_cells`); built here if missing. Given, the pass is one window.
    memory_budget : int, optional
        Bytes one window's pass may use; default :func:`cluster_memory_budget` with a
        client of worker processes current, else (no client, or worker threads in this
        process) :func:`default_memory_budget`, with the windows run here.
    device : {"cpu", "cuda"}, optional
        Where the bands are reduced: ``cuda`` moves each band to the GPU (cupy, the ``gpu``
        extra) and reduces it there; the atoms are built on the CPU either way.
    engine : {"compiled", "sorted"}, optional
        ``compiled``: the numba passes (CPU only). ``sorted``: the sort-based reduction of
        ``spatial.sorted_pass`` (on cupy for ``cuda``, on numpy for ``cpu``, where it checks the
        GPU code). Default: compiled on the CPU, sorted on the GPU.

    Returns
    -------
    dict of str to xarray.Dataset
        Per level key an L2 dataset of ``<variable>_<statistic>`` on ``cell_ids`` (with
        ``GridSpec.xdggs_attrs``), quantiles along a ``quantile`` dim.

    Raises
    ------
    ValueError
        If ``level_map`` was built for another grid or other levels, the budget cannot
        hold the largest cell, or ``engine`` cannot run on ``device``.
    """
    from entropice_core.io.icechunk import _current_client

    sorted_on = pass_engine(device, engine)

    raster = crop_to_cells(raster, levels)
    client = _current_client()
    if client is not None and all(
        str(address).startswith("inproc://")
        for address in client.scheduler_info(n_workers=-1)["workers"]
    ):
        client = None  # worker threads in this process: its memory, no copies to them
    if level_map is not None:
        return _aggregate_window(raster, levels, config, sorted_on, level_map)
    if memory_budget is None:
        memory_budget = (
            cluster_memory_budget(client) if client is not None else default_memory_budget()
        )
    windows = plan_windows(raster, levels, memory_budget)
    if windows is None and client is None:
        return _aggregate_window(raster, levels, config, sorted_on)
    if windows is None:  # one window, on a worker (the run's own process may be small)
        windows = [{key: np.arange(len(cells)) for key, cells in levels.items()}]
    # levels without cells go with the first window, which gives them their empty datasets
    for key in levels:
        if not any(key in w for w in windows):
            windows[0][key] = np.zeros(0, dtype=np.int64)
    subsets = [
        {key: levels[key].iloc[w[key]] for key in levels if key in w} for w in windows
    ]  # fmt: skip
    if client is not None:
        futures = [
            client.submit(
                _aggregate_window, crop_to_cells(raster, sub), sub, config, sorted_on, pure=False
            )
            for sub in subsets
        ]
        parts = client.gather(futures)
    else:
        parts = [
            _aggregate_window(crop_to_cells(raster, sub), sub, config, sorted_on) for sub in subsets
        ]
    out = {}
    for key in levels:
        found = [(w[key], part[key]) for w, part in zip(windows, parts, strict=True) if key in w]
        positions = np.concatenate([p for p, _ in found])
        merged = xr.concat([ds for _, ds in found], dim="cell_ids", combine_attrs="override")
        out[key] = merged.isel(cell_ids=np.argsort(positions, kind="stable"))
    return out


def _aggregate_window(
    raster: xr.Dataset,
    levels: Mapping[str, gpd.GeoDataFrame],
    config: AggregationConfig,
    sorted_on: str | None = None,
    level_map: LevelMap | None = None,
) -> dict[str, xr.Dataset]:
    """One pass of :func:`aggregate_levels` over ``raster`` (cut to the cells) for all levels.

    ``sorted_on`` as :func:`pass_engine` returns it: the sorted engine's array library, or
    None for the compiled engine.
    """
    grid = RasterGrid.from_xarray(raster)
    if level_map is None:
        level_map = build_level_map(levels, grid)
    elif level_map.grid != grid or level_map.levels != tuple(levels):
        raise ValueError("level_map was built for another raster grid or other levels")
    q_levels = config.levels
    names = [str(v) for v in raster.data_vars if raster[v].ndim == 2]
    per_band = []
    if sorted_on is None:
        packed = np.empty(len(level_map.order), dtype=np.float32)

        def reduce(flat: np.ndarray) -> _Band:
            return _reduce_band(flat, level_map, q_levels, packed)
    else:
        from entropice_core.arrays import array_module
        from entropice_core.spatial import sorted_pass

        xp = array_module(sorted_on, f"aggregate_levels on {sorted_on}")
        device_map = sorted_pass.DeviceLevelMap.build(level_map, xp)

        def reduce(flat: np.ndarray) -> _Band:
            return _Band(*sorted_pass.reduce_band(flat, device_map, np.asarray(q_levels)))

    # The next band is read (decompressed on dask's threads) while this one is reduced:
    # reading and the compiled passes leave each other's idle cores busy.
    with ThreadPoolExecutor(1) as reader:
        pending = reader.submit(_read_band, raster, names[0]) if names else None
        for i in range(len(names)):
            assert pending is not None
            flat = pending.result()
            pending = (
                reader.submit(_read_band, raster, names[i + 1]) if i + 1 < len(names) else None
            )
            per_band.append(reduce(flat))
            del flat
    out = {}
    for i, key in enumerate(level_map.levels):
        spec = GridSpec.from_key(key)
        edges = level_map.edges[i]
        moments = np.stack([band.moments[i] for band in per_band], axis=1)  # (5, bands, cells)
        weight = moments[0]
        mean = moments[1]
        cm = CellMoments(
            cells=np.arange(len(edges.cell_ids)),
            weight=weight,
            weighted_sum=np.where(weight > 0, weight * mean, 0.0),
            m2=np.where(weight > 0, moments[2], 0.0),
            count=weight,
            total=np.where(weight > 0, weight * mean, 0.0),
            minimum=np.where(weight > 0, moments[3], np.inf),
            maximum=np.where(weight > 0, moments[4], -np.inf),
            member_cell=np.zeros(0, np.int32),
            member_length=np.zeros(0, np.int64),
            member_value=np.zeros((len(names), 0), np.float32),
            total_weight=edges.total_weight,
            quantiles={
                q: np.stack([band.quantiles[i][j] for band in per_band])
                for j, q in enumerate(q_levels)
            },
            requested=tuple(config.quantiles),
        )
        coords: dict[str, Any] = {"cell_ids": ("cell_ids", edges.cell_ids, spec.xdggs_attrs)}
        variables: dict[str, Any] = {}
        for stat in config.statistics:
            entry = STATISTICS[stat]
            values = entry.compute(cm)  # (bands, cells) or (quantile, bands, cells)
            for b, name in enumerate(names):
                if entry.dim:
                    coords[entry.dim] = list(config.quantiles)
                    variables[f"{name}_{stat}"] = (("cell_ids", entry.dim), values[:, b].T)
                else:
                    variables[f"{name}_{stat}"] = ("cell_ids", values[b])
        # one construction: assigning variables one by one copies the dataset each time
        ds = xr.Dataset(variables, coords=coords)
        ds.attrs.update(grid=spec.grid, level=spec.level)
        out[key] = ds
    return out
