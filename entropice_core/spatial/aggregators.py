"""Raster-to-grid aggregation: zonal statistics of a raster over the cells of a grid level.

Definitions (see ``docs/aggregation.md``)
-----------------------------------------
Every (pixel, cell) pair of a :class:`~entropice_core.spatial.pixelmap.CellPixelMap` has a
coverage ``c`` (the exact share of the pixel's area inside the cell) and a weight ``w = c * a``,
where ``a`` is 1 on projected rasters and the pixel's true area (km2, WGS84) on lon/lat rasters.
Over the valid (non-nodata) pixels of a cell:

- ``mean = sum(w x) / sum(w)``; ``std = sqrt(sum(w (x - mean)^2) / sum(w))`` (population);
- ``sum = sum(c x)`` and ``count = sum(c)``, as exactextract defines them;
- ``min``/``max`` over pixels with ``c > 0``;
- ``valid_fraction = sum(w) / W``, with ``W`` the weight of the whole cell including its parts
  outside the raster, so a cell half outside reports at most 0.5;
- ``median`` and ``quantile`` follow the *pixel-centre* rule: the valid pixels whose centre lies
  in the cell, unweighted, with numpy's default (linear) interpolation.

Tiling
------
Rows are processed in the mapping's fixed *blocks*; each block gives a :class:`Partial` (weights,
weighted sums, sums of squared deviations from the mean, min, max and the pixel-centre values as
per-cell segments) and partials are merged in block order with Chan's pairwise formula. Reading
several blocks at once (``max_pixels``) or running blocks as dask tasks changes neither the blocks
nor the merge order, so results are bit-identical however the raster is tiled. Quantiles need all
values of a cell at once: the sequential path finishes cells lying in one block from that block's
segment and keeps aside the values of cells spanning blocks until their last block, so memory
stays about one block plus one row of cells; the dask path keeps all pixel-centre values until
the final merge.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial, reduce

import dask
import dask.array as da
import geopandas as gpd
import numpy as np
import xarray as xr
from pydantic import BaseModel, ConfigDict, Field, model_validator

from entropice_core.config import GridSpec
from entropice_core.spatial.kernels import MOMENTS, segment_moments
from entropice_core.spatial.pixelmap import CellPixelMap, RasterGrid, build_cell_pixel_map, runs

#: Statistics computed when none are asked for.
DEFAULT_STATISTICS = ("mean", "std", "min", "max", "count", "valid_fraction")
#: Pixels (times bands) read at once by default: 256 MiB of float64.
DEFAULT_MAX_PIXELS = 2**25


@dataclass(frozen=True)
class Partial:
    """Per-cell partial results of some blocks, for the cells in ``cells`` (sorted indices).

    Moment arrays are ``(bands, len(cells))``. The pixel-centre values (NaN where nodata) for
    quantiles come in segments: ``member_value`` is ``(bands, member_length.sum())``, segment
    ``i`` holds ``member_length[i]`` values of cell ``member_cell[i]`` (a cell may have several).
    """

    cells: np.ndarray
    weight: np.ndarray
    weighted_sum: np.ndarray
    m2: np.ndarray
    count: np.ndarray
    total: np.ndarray
    minimum: np.ndarray
    maximum: np.ndarray
    member_cell: np.ndarray
    member_length: np.ndarray
    member_value: np.ndarray


@dataclass(frozen=True)
class CellMoments(Partial):
    """Final moments ``(bands, cells)`` of every cell: the input of every statistic.

    No member segments; with the cells' total weights and quantiles.
    """

    total_weight: np.ndarray
    quantiles: dict[float, np.ndarray] = field(default_factory=dict)
    requested: tuple[float, ...] = ()

    def quantile(self, q: float) -> np.ndarray:
        """Return the quantile at level ``q`` of every cell.

        Parameters
        ----------
        q : float
            A level computed for the statistics asked for (see ``AggregationConfig.levels``).

        Returns
        -------
        numpy.ndarray
            ``(bands, cells)`` values.
        """
        return self.quantiles[q]


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.full(np.broadcast(a, b).shape, np.nan), where=b > 0)


@dataclass(frozen=True)
class Statistic:
    """One output variable of the aggregation.

    ``compute`` maps moments to values; ``levels`` names the quantiles it needs from the
    requested ones; ``dim`` is an extra output dimension (``quantile``).
    """

    compute: Callable[[CellMoments], np.ndarray]
    levels: Callable[[Sequence[float]], tuple[float, ...]] = lambda qs: ()
    dim: str | None = None


#: The registry: add a statistic here and every caller can ask for it by name.
STATISTICS: dict[str, Statistic] = {
    "mean": Statistic(lambda m: _div(m.weighted_sum, m.weight)),
    "sum": Statistic(lambda m: np.where(m.count > 0, m.total, np.nan)),
    "std": Statistic(lambda m: np.sqrt(np.maximum(_div(m.m2, m.weight), 0.0))),
    "min": Statistic(lambda m: np.where(np.isfinite(m.minimum), m.minimum, np.nan)),
    "max": Statistic(lambda m: np.where(np.isfinite(m.maximum), m.maximum, np.nan)),
    "count": Statistic(lambda m: m.count),
    "valid_fraction": Statistic(lambda m: _div(m.weight, m.total_weight[None, :])),
    "median": Statistic(lambda m: m.quantile(0.5), levels=lambda qs: (0.5,)),
    "quantile": Statistic(
        lambda m: np.stack([m.quantile(q) for q in m.requested]),
        levels=lambda qs: tuple(float(q) for q in qs),
        dim="quantile",
    ),
}


class AggregationConfig(BaseModel):
    """What to compute and how much to read at once.

    ``quantiles`` are the levels of the ``quantile`` statistic; ``max_pixels`` bounds the pixels
    times bands read per step (at least one mapping block is read).
    """

    model_config = ConfigDict(frozen=True)

    statistics: tuple[str, ...] = Field(
        default=DEFAULT_STATISTICS, description="Names of registered statistics (STATISTICS)."
    )
    quantiles: tuple[float, ...] = Field(
        default=(), description="Levels in [0, 1] of the 'quantile' statistic."
    )
    max_pixels: int = Field(
        default=DEFAULT_MAX_PIXELS, ge=1, description="Pixels x bands read per step (at most)."
    )

    @model_validator(mode="after")
    def _known(self) -> AggregationConfig:
        unknown = [s for s in self.statistics if s not in STATISTICS]
        if unknown:
            raise ValueError(f"unknown statistics {unknown}; known: {', '.join(STATISTICS)}")
        if "quantile" in self.statistics and not self.quantiles:
            raise ValueError("the 'quantile' statistic needs quantiles=(...) levels in [0, 1]")
        if any(not 0 <= q <= 1 for q in self.quantiles):
            raise ValueError(f"quantiles {self.quantiles} must lie in [0, 1]")
        return self

    @property
    def levels(self) -> tuple[float, ...]:
        """The quantile levels the statistics need (``median`` adds 0.5), each once, in order."""
        found = [q for s in self.statistics for q in STATISTICS[s].levels(self.quantiles)]
        return tuple(dict.fromkeys(found))


def block_partial(
    cmap: CellPixelMap, block: int, values: np.ndarray, members: bool = True
) -> Partial:
    """Compute the partial moments of one mapping block from its pixel values.

    This is the per-tile task of parallel runs; merge results with :func:`merge_partials`.
    Interior pixels (coverage 1) are reduced over the interior heads of the block's cell
    segments, edge pixels over their coverage entries (which also give the edge pixels' min and
    max); the two partials are merged in that fixed order.

    Parameters
    ----------
    cmap : CellPixelMap
        The cell-to-pixel map of the raster grid.
    block : int
        The mapping block.
    values : numpy.ndarray
        ``(bands, pixels)`` values of the block's rows, NaN where nodata.
    members : bool, optional
        Keep the whole segments (interior and edge pixels with their centre in the cell) for
        the quantiles.

    Returns
    -------
    Partial
        The block's moments per cell (and member segments with ``members``).
    """
    s0, s1 = cmap.block_segment[block], cmap.block_segment[block + 1]
    cells, bounds = cmap.segment_cell[s0:s1], cmap.segment_start[s0 : s1 + 1]
    none = np.zeros(0)
    rows = none
    if cmap.row_area is not None:
        rows = cmap.row_area[slice(*cmap.block_rows_range(block))]

    def moments(pixel, start, stop, share, coverage, cells) -> Partial:
        found = segment_moments(values, pixel, start, stop, share, coverage, rows, cmap.grid.width)
        empty = _empty_partial(values.shape[0], values.dtype)
        return replace(empty, cells=cells, **dict(zip(MOMENTS, found, strict=True)))

    inner = moments(
        cmap.member_pixel,
        bounds[:-1],
        bounds[:-1] + cmap.segment_interior[s0:s1],
        none,
        none,
        cells,
    )
    e0, e1 = cmap.edge_start[block], cmap.edge_start[block + 1]
    edge_cell = cmap.edge_cell[e0:e1]
    edge_bounds = e0 + np.flatnonzero(np.diff(edge_cell, prepend=-1, append=-1))
    share = cmap.edge_coverage if cmap.edge_share is None else cmap.edge_share
    edge = moments(
        cmap.edge_pixel,
        edge_bounds[:-1],
        edge_bounds[1:],
        share,
        cmap.edge_coverage,
        cmap.edge_cell[edge_bounds[:-1]],
    )
    part = merge_partials(inner, edge)
    if not members:
        return part
    member_value = values[:, cmap.member_pixel[bounds[0] : bounds[-1]]]
    return replace(
        part, member_cell=cells, member_length=np.diff(bounds), member_value=member_value
    )


def _empty_partial(nb: int, dtype: np.dtype) -> Partial:
    none = np.zeros((nb, 0))
    return Partial(
        np.zeros(0, np.int32), none, none, none, none, none, none, none,
        np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros((nb, 0), dtype),
    )  # fmt: skip


def merge_partials(a: Partial, b: Partial) -> Partial:
    """Merge two partials exactly and deterministically.

    Weights and sums add; sums of squared deviations combine with Chan et al.'s pairwise rule
    ``M2 = M2a + M2b + (mean_b - mean_a)^2 Wa Wb / (Wa + Wb)``, which stays accurate where the
    textbook ``sum(w x^2) - W mean^2`` cancels catastrophically.

    Parameters
    ----------
    a, b : Partial
        Partials, ``a`` from earlier blocks than ``b``.

    Returns
    -------
    Partial
        The moments of the union of their cells; member segments of ``a`` then ``b``.
    """
    cells = np.union1d(a.cells, b.cells)
    ia, ib = np.searchsorted(cells, a.cells), np.searchsorted(cells, b.cells)
    nb = max(a.weight.shape[0], b.weight.shape[0])

    def spread(part: Partial, index: np.ndarray, name: str, fill: float) -> np.ndarray:
        out = np.full((nb, len(cells)), fill)
        out[:, index] = getattr(part, name)
        return out

    wa, wb = spread(a, ia, "weight", 0.0), spread(b, ib, "weight", 0.0)
    sa, sb = spread(a, ia, "weighted_sum", 0.0), spread(b, ib, "weighted_sum", 0.0)
    weight = wa + wb
    delta = np.nan_to_num(_div(sb, wb) - _div(sa, wa))
    cross = np.where((wa > 0) & (wb > 0), delta * delta * _div(wa * wb, weight), 0.0)
    m2 = spread(a, ia, "m2", 0.0) + spread(b, ib, "m2", 0.0) + np.nan_to_num(cross)
    return Partial(
        cells=cells,
        weight=weight,
        weighted_sum=sa + sb,
        m2=m2,
        count=spread(a, ia, "count", 0.0) + spread(b, ib, "count", 0.0),
        total=spread(a, ia, "total", 0.0) + spread(b, ib, "total", 0.0),
        minimum=np.minimum(spread(a, ia, "minimum", np.inf), spread(b, ib, "minimum", np.inf)),
        maximum=np.maximum(spread(a, ia, "maximum", -np.inf), spread(b, ib, "maximum", -np.inf)),
        member_cell=np.concatenate([a.member_cell, b.member_cell]),
        member_length=np.concatenate([a.member_length, b.member_length]),
        member_value=np.concatenate([a.member_value, b.member_value], axis=1),
    )


def member_quantiles(part: Partial, levels: Sequence[float], n_cells: int) -> np.ndarray:
    """Compute the quantiles of the member segments of ``part``.

    Segments of the same cell are first gathered into one (only where a cell has several).

    Parameters
    ----------
    part : Partial
        Partial with member segments.
    levels : sequence of float
        Quantile levels in [0, 1].
    n_cells : int
        Number of cells of the map.

    Returns
    -------
    numpy.ndarray
        ``(levels, bands, n_cells)``; NaN for cells without members.
    """
    out = np.full((len(levels), part.member_value.shape[0], n_cells), np.nan)
    cells, lengths, values = part.member_cell, part.member_length, part.member_value
    if not len(cells):
        return out
    order = np.argsort(cells, kind="stable")
    starts = np.cumsum(lengths) - lengths
    ordered = cells[order]
    first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    if len(first) < len(cells):
        values = values[:, runs(starts[order], lengths[order])]
        lengths = np.add.reduceat(lengths[order], first)
        starts, cells = np.cumsum(lengths) - lengths, ordered[first]
    out[:, :, cells] = segment_quantiles(values, starts, lengths, levels)
    return out


#: Segments up to this long are sorted together as rows of a padded array (one call per size
#: class); longer ones one by one, so Python overhead stays small for any segment size.
ROW_SORT_MAX = 2048


def segment_quantiles(
    values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, levels: Sequence[float]
) -> np.ndarray:
    """Compute the quantiles of value segments (numpy's linear rule).

    NaNs (nodata) sort to the end of a segment, so the valid values are its first ``n``
    sorted ones.

    Parameters
    ----------
    values : numpy.ndarray
        ``(bands, n)`` flat values; long segments are sorted in place.
    starts, lengths : numpy.ndarray
        Start and length of each segment in ``values``.
    levels : sequence of float
        Quantile levels in [0, 1].

    Returns
    -------
    numpy.ndarray
        ``(levels, bands, segments)``; NaN for segments without a valid value.
    """
    out = np.full((len(levels), values.shape[0], len(starts)), np.nan)
    size = np.left_shift(1, np.ceil(np.log2(np.maximum(lengths, 1))).astype(np.int64))
    long = np.flatnonzero(size > ROW_SORT_MAX)
    classes = [np.flatnonzero(size == s) for s in np.unique(size[size <= ROW_SORT_MAX])]
    for band, x in enumerate(values):
        for sel in classes:
            span = np.arange(size[sel[0]])
            inside = span < lengths[sel, None]
            rows = np.where(inside, x[np.where(inside, starts[sel, None] + span, 0)], np.nan)
            rows.sort(axis=1)
            n = np.count_nonzero(~np.isnan(rows), axis=1)
            out[:, band, sel] = _pick(partial(_take_rows, rows), n, levels)
        n = np.zeros(len(long), dtype=np.int64)
        for j, (s, m) in enumerate(zip(starts[long], lengths[long], strict=True)):
            segment = x[s : s + m]
            segment.sort()
            n[j] = np.searchsorted(segment, np.nan)
        out[:, band, long] = _pick(partial(_take_from, x, starts[long]), n, levels)
    return out


def _take_rows(rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Return the value at ``positions[i]`` of each sorted row ``i``."""
    return rows[np.arange(len(rows)), positions]


def _take_from(x: np.ndarray, starts: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Return the value at ``starts[i] + positions[i]`` of the flat, segment-sorted values."""
    return x[starts + positions]


def _pick(
    get: Callable[[np.ndarray], np.ndarray], n: np.ndarray, levels: Sequence[float]
) -> np.ndarray:
    """Compute linear-rule quantiles ``(levels, segments)`` from sorted segments.

    The segments have ``n`` values each (NaN where ``n`` is 0); ``get`` reads the values at
    positions within the segments.
    """
    out = np.full((len(levels), len(n)), np.nan)
    present = n > 0
    for i, q in enumerate(levels):
        position = (n - 1) * q
        below = np.floor(position).astype(np.int64)
        t = position - below
        a = get(np.maximum(below, 0)).astype(np.float64)
        b = get(np.clip(below + 1, 0, np.maximum(n - 1, 0))).astype(np.float64)
        diff = b - a
        out[i, present] = np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)[present]
    return out


def _as_float(data: xr.DataArray) -> xr.DataArray:
    """Return raster values as floats with nodata as NaN."""
    nodata = data.rio.nodata if data.rio.nodata is not None else data.rio.encoded_nodata
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype(np.float64)
    if nodata is not None and not np.isnan(nodata):
        data = data.where(data != nodata)
    return data


def _rows(data: xr.DataArray, extra: Sequence[Hashable], start: int, stop: int) -> np.ndarray:
    y, x = data.rio.y_dim, data.rio.x_dim
    part = data.isel({y: slice(start, stop)}).transpose(*extra, y, x)
    return np.asarray(part.values).reshape(-1, (stop - start) * data.sizes[x])


def aggregate_partial(
    data: xr.DataArray, cmap: CellPixelMap, config: AggregationConfig
) -> tuple[Partial, np.ndarray]:
    """Reduce all blocks, merged in order, with bounded memory.

    Reads ``config.max_pixels`` pixels (times bands) at a time. A cell whose members all lie in
    one block gets its quantiles from that block's segment; the values of cells spanning blocks
    are kept until their last block is read.

    Parameters
    ----------
    data : xarray.DataArray
        Float raster (nodata as NaN) with ``y``/``x`` dims; other dims are flattened to bands.
    cmap : CellPixelMap
        The cell-to-pixel map of the raster grid.
    config : AggregationConfig
        Quantile levels and the read size.

    Returns
    -------
    moments : Partial
        The merged moments of every cell with pixels.
    quantiles : numpy.ndarray
        ``(levels, bands, cells)`` quantiles.
    """
    extra = [d for d in data.dims if d not in (data.rio.y_dim, data.rio.x_dim)]
    nb = int(np.prod([data.sizes[d] for d in extra]))
    levels = config.levels
    n_cells = len(cmap.cell_ids)
    spans = _member_blocks(cmap)
    last_block = spans[1]
    quantiles = np.full((len(levels), nb, n_cells), np.nan)
    blocks_per_read = max(1, config.max_pixels // (cmap.block_rows * cmap.grid.width * nb))
    acc = _empty_partial(nb, data.dtype)
    pending: dict[int, list[np.ndarray]] = {}
    for first in range(0, cmap.n_blocks, blocks_per_read):
        last = min(first + blocks_per_read, cmap.n_blocks)
        row0 = cmap.block_rows_range(first)[0]
        values = _rows(data, extra, row0, cmap.block_rows_range(last - 1)[1])
        for block in range(first, last):
            r0, r1 = cmap.block_rows_range(block)
            offset = (r0 - row0) * cmap.grid.width
            block_values = values[:, offset : offset + (r1 - r0) * cmap.grid.width]
            part = block_partial(cmap, block, block_values, members=bool(levels))
            acc = merge_partials(acc, _without_members(part))
            if not levels:
                continue
            part, finished, finished_q = _finish_alone(part, spans, block, levels)
            quantiles[:, :, finished] = finished_q
            cells, lengths = part.member_cell, part.member_length
            starts = np.cumsum(lengths) - lengths
            for j, cell in enumerate(cells):
                piece = part.member_value[:, starts[j] : starts[j] + lengths[j]]
                pending.setdefault(int(cell), []).append(piece)
            done = [int(c) for c in cells if last_block[c] == block]
            if done:
                pieces = [pending.pop(c) for c in done]
                sizes = np.array([sum(p.shape[1] for p in ps) for ps in pieces])
                joined = np.concatenate([p for ps in pieces for p in ps], axis=1)
                quantiles[:, :, done] = segment_quantiles(
                    joined, np.cumsum(sizes) - sizes, sizes, levels
                )
    return acc, quantiles


def _without_members(part: Partial) -> Partial:
    none = _empty_partial(part.member_value.shape[0], part.member_value.dtype)
    return replace(
        part,
        member_cell=none.member_cell,
        member_length=none.member_length,
        member_value=none.member_value,
    )


def aggregate_partial_dask(
    data: xr.DataArray, cmap: CellPixelMap, config: AggregationConfig
) -> tuple[Partial, np.ndarray]:
    """Reduce all blocks as :func:`aggregate_partial` does, one dask task per mapping block.

    Tasks run on the current dask scheduler: the ``distributed`` client of the Dagster
    ``DaskResource`` when a run has one (workers read their own rows of a lazily opened raster;
    the mapping is shipped once), else local threads. The compiled reductions release the GIL,
    so the threads of a worker reduce blocks side by side. Each task finishes the quantiles of
    the cells whose pixel centres all lie in its block and passes on only the values of cells
    that span blocks; the merge runs in block order in one final task, so results are
    bit-identical to the sequential path.

    Parameters
    ----------
    data : xarray.DataArray
        Float raster (nodata as NaN), lazy or in memory, with ``y``/``x`` dims; other dims are
        flattened to bands.
    cmap : CellPixelMap
        The cell-to-pixel map of the raster grid.
    config : AggregationConfig
        Quantile levels.

    Returns
    -------
    moments : Partial
        The merged moments of every cell with pixels.
    quantiles : numpy.ndarray
        ``(levels, bands, cells)`` quantiles.
    """
    y, x = data.rio.y_dim, data.rio.x_dim
    extra = [d for d in data.dims if d not in (y, x)]
    nb = int(np.prod([data.sizes[d] for d in extra]))
    rows = data.transpose(*extra, y, x).data
    rows = rows if isinstance(rows, da.Array) else da.from_array(rows)
    rows = rows.reshape(nb, data.sizes[y], data.sizes[x], merge_chunks=True)
    pieces = rows.rechunk((nb, cmap.block_rows, data.sizes[x])).to_delayed().ravel()
    shared_map = dask.delayed(cmap, traverse=False)
    spans = dask.delayed(_member_blocks(cmap), traverse=False)
    levels = tuple(config.levels)
    parts = [
        dask.delayed(_block_task)(shared_map, spans, block, piece, levels)
        for block, piece in enumerate(pieces)
    ]
    (result,) = dask.compute(dask.delayed(_merge_blocks)(parts, levels, len(cmap.cell_ids)))
    return result


def _block_task(
    cmap: CellPixelMap,
    spans: tuple[np.ndarray, np.ndarray],
    block: int,
    rows: np.ndarray,
    levels: tuple[float, ...],
) -> tuple[Partial, np.ndarray, np.ndarray]:
    """Reduce one block of :func:`aggregate_partial_dask`: see :func:`_finish_alone`."""
    part = block_partial(cmap, block, rows.reshape(rows.shape[0], -1), members=bool(levels))
    return _finish_alone(part, spans, block, levels)


def _finish_alone(
    part: Partial, spans: tuple[np.ndarray, np.ndarray], block: int, levels: Sequence[float]
) -> tuple[Partial, np.ndarray, np.ndarray]:
    """Finish the quantiles of the cells whose pixel centres all lie in ``block``.

    Returns ``part`` keeping only the member values of the cells that span blocks, the cells
    finished, and their quantiles ``(levels, bands, cells)``; ``spans`` holds each cell's first
    and last block.
    """
    cells, lengths = part.member_cell, part.member_length
    starts = np.cumsum(lengths) - lengths
    first_block, last_block = spans
    alone = (first_block[cells] == block) & (last_block[cells] == block)
    quantiles = segment_quantiles(part.member_value, starts[alone], lengths[alone], levels)
    spanning = replace(
        part,
        member_cell=cells[~alone],
        member_length=lengths[~alone],
        member_value=part.member_value[:, runs(starts[~alone], lengths[~alone])],
    )
    return spanning, cells[alone], quantiles


def _merge_blocks(
    parts: list[tuple[Partial, np.ndarray, np.ndarray]], levels: tuple[float, ...], n_cells: int
) -> tuple[Partial, np.ndarray]:
    """Merge the partials in block order and gather the quantiles of every cell."""
    acc = reduce(merge_partials, [part for part, _, _ in parts])
    quantiles = member_quantiles(acc, levels, n_cells)
    for _, cells, finished in parts:
        quantiles[:, :, cells] = finished
    return acc, quantiles


def _member_blocks(cmap: CellPixelMap) -> tuple[np.ndarray, np.ndarray]:
    """Return the first and last block holding a pixel-centre member of each cell (-1 for none)."""
    block = np.repeat(np.arange(cmap.n_blocks), np.diff(cmap.block_segment))
    first = np.full(len(cmap.cell_ids), cmap.n_blocks, dtype=np.int64)
    last = np.full(len(cmap.cell_ids), -1, dtype=np.int64)
    np.minimum.at(first, cmap.segment_cell, block)
    np.maximum.at(last, cmap.segment_cell, block)
    return np.where(last < 0, -1, first), last


def aggregate_raster(
    raster: xr.DataArray | xr.Dataset,
    cells: gpd.GeoDataFrame,
    spec: GridSpec,
    config: AggregationConfig = AggregationConfig(),
    *,
    cell_map: CellPixelMap | None = None,
    parallel: bool = False,
) -> xr.Dataset:
    """Compute zonal statistics of ``raster`` over ``cells`` as an L2 dataset on ``cell_ids``.

    Parameters
    ----------
    raster : xarray.DataArray or xarray.Dataset
        Raster with a CRS (rioxarray) and ``y``/``x`` dims; other dims (time, band) are carried
        through. Nodata is NaN or the raster's (encoded) nodata value.
    cells : geopandas.GeoDataFrame
        The cells of a grid level (``grid_cells``: cell_id, EPSG:4326 geometry).
    spec : GridSpec
        Grid and level of the cells.
    config : AggregationConfig, optional
        The statistics, quantile levels and read size.
    cell_map : CellPixelMap, optional
        A mapping built earlier for the same raster grid and cells; built here if missing.
    parallel : bool, optional
        Run one dask task per block instead of the bounded-memory sequential loop.

    Returns
    -------
    xarray.Dataset
        One variable per statistic (``<var>_<statistic>`` for Dataset input), dims
        ``(cell_ids[, quantile], *extra)``; ``cell_ids`` carries ``spec.xdggs_attrs``.

    Raises
    ------
    ValueError
        If ``cell_map`` was built for another raster grid or another set of cells.
    """
    grid = RasterGrid.from_xarray(raster)
    if cell_map is None:
        cell_map = build_cell_pixel_map(cells, grid)
    elif cell_map.grid != grid or len(cell_map.cell_ids) != len(cells):
        raise ValueError("cell_map was built for another raster grid or another set of cells")
    arrays = raster.data_vars.items() if isinstance(raster, xr.Dataset) else [(None, raster)]
    out = xr.Dataset(coords={"cell_ids": ("cell_ids", cell_map.cell_ids, spec.xdggs_attrs)})
    run = aggregate_partial_dask if parallel else aggregate_partial
    for name, data in arrays:
        data = _as_float(data)
        acc, quantiles = run(data, cell_map, config)
        moments = _moments(acc, quantiles, cell_map, config)
        extra = [d for d in data.dims if d not in (data.rio.y_dim, data.rio.x_dim)]
        shape = [data.sizes[d] for d in extra]
        for stat in config.statistics:
            entry = STATISTICS[stat]
            values = entry.compute(moments)
            lead = [entry.dim] if entry.dim else []
            values = values.reshape(*values.shape[: len(lead)], *shape, -1)
            values = np.moveaxis(values, -1, 0)
            coords = {d: data[d] for d in extra if d in data.coords}
            if entry.dim:
                coords[entry.dim] = xr.DataArray(list(config.quantiles), dims=entry.dim)
            key = stat if name is None else f"{name}_{stat}"
            out[key] = xr.DataArray(values, dims=["cell_ids", *lead, *extra], coords=coords)
    out.attrs.update(grid=spec.grid, level=spec.level)
    return out


def _moments(
    acc: Partial, quantiles: np.ndarray, cmap: CellPixelMap, config: AggregationConfig
) -> CellMoments:
    n, nb = len(cmap.cell_ids), acc.weight.shape[0]
    fills = {"minimum": np.inf, "maximum": -np.inf}
    dense = {}
    for name in MOMENTS:
        dense[name] = np.full((nb, n), fills.get(name, 0.0))
        dense[name][:, acc.cells] = getattr(acc, name)
    return CellMoments(
        **vars(_empty_partial(nb, acc.member_value.dtype)) | dense | {"cells": np.arange(n)},
        total_weight=cmap.total_weight,
        quantiles={q: quantiles[i] for i, q in enumerate(config.levels)},
        requested=tuple(config.quantiles),
    )
