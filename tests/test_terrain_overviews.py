"""Pixel-sample overviews of a raster, committed with it to Icechunk (terrain/overviews.py).

The expected samples are numpy slices of the raster's values, written here."""

import itertools

import numpy as np
import pytest
import rioxarray  # noqa: F401
import xarray as xr

from entropice_core.io.icechunk import commit_raster, read_dataset_version
from entropice_core.terrain.overviews import (
    GROUP,
    SAMPLE_STRIDES,
    STRIDES,
    block_sample,
    overview_pyramid,
    pixel_sample,
    sample_chunks,
    sample_stride,
    stored_sample,
)

SIZE = 200  # pixels; not a multiple of most strides, so the last sample rows are partial


def raster(seed: int) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    x = -2_600_000 + 32 * (np.arange(SIZE) + 0.5)
    y = 200_000 - 32 * (np.arange(SIZE) + 0.5)
    values = {
        name: (("y", "x"), rng.normal(size=(SIZE, SIZE)).astype(np.float32))
        for name in ("elevation", "slope")
    }
    values["slope"][1][:5, :5] = np.nan  # nodata survives the sampling
    dataset = xr.Dataset(values, coords={"y": y, "x": x}).chunk(64)
    dataset["slope"].attrs["units"] = "degrees"
    return dataset.rio.write_crs("EPSG:3413")


def commit(path, dataset) -> str:
    return commit_raster(dataset, path, "test", STRIDES)


def test_every_stored_stride_holds_the_centre_pixel_of_each_block(tmp_path) -> None:
    dataset = raster(0)
    snapshot = commit(tmp_path / "r.icechunk", dataset)
    overviews = read_dataset_version(tmp_path / "r.icechunk", GROUP, snapshot)
    assert overviews.attrs["strides"] == list(STRIDES)
    for stride in STRIDES:
        sample = stored_sample(overviews, stride)
        assert sample is not None and sample.rio.crs.to_epsg() == 3413
        first = stride // 2
        for name in ("elevation", "slope"):
            expected = dataset[name].to_numpy()[first::stride, first::stride]
            np.testing.assert_array_equal(sample[name].to_numpy(), expected)
        np.testing.assert_array_equal(sample["x"], dataset["x"][first::stride])
        np.testing.assert_array_equal(sample["y"], dataset["y"][first::stride])
        assert sample["slope"].attrs["units"] == "degrees"
        assert sample.rio.resolution() == (32.0 * stride, -32.0 * stride)
        strided = pixel_sample(dataset, stride).drop_vars("spatial_ref").compute()
        xr.testing.assert_equal(sample.drop_vars("spatial_ref"), strided)
    assert stored_sample(overviews, 2) is None  # not stored: read from the full raster


def test_a_snapshot_pairs_the_raster_with_its_own_overviews(tmp_path) -> None:
    path = tmp_path / "r.icechunk"
    first, second = commit(path, raster(1)), commit(path, raster(2))
    for snapshot, seed in ((first, 1), (second, 2)):
        overviews = read_dataset_version(path, GROUP, snapshot)
        expected = raster(seed)["elevation"].to_numpy()[2::4, 2::4]
        np.testing.assert_array_equal(stored_sample(overviews, 4)["elevation"], expected)
        root = read_dataset_version(path, None, snapshot)
        np.testing.assert_array_equal(root["elevation"], raster(seed)["elevation"])
        assert not any(str(v).endswith("_s4") for v in root.data_vars)


@pytest.mark.parametrize(
    ("wanted", "taken"), [(0, 1), (1, 1), (2, 2), (5, 4), (7, 6), (11, 8), (63, 48), (500, 64)]
)
def test_strides_round_down_to_the_series(wanted: int, taken: int) -> None:
    assert sample_stride(wanted) == taken
    # from 2 on each step of the series is at most 1.5x: at most 2.25x the pixels asked for
    steps = itertools.pairwise(SAMPLE_STRIDES[1:])
    assert all(b / a <= 1.5 for a, b in steps)


@pytest.mark.parametrize("chunks", [(64, 64, 64, 8), (1024, 1024, 300), (5, 7, 1, 40)])
def test_block_samples_put_together_are_the_raster_sample(chunks) -> None:
    """Each block's sample, in block order, gives numpy's strided slice of the whole axis."""
    values = np.arange(sum(chunks) ** 2, dtype=np.float32).reshape(sum(chunks), -1)
    edges = np.cumsum((0, *chunks))
    for stride in STRIDES:
        counts = sample_chunks(chunks, stride)
        rows = [
            np.concatenate(
                [
                    block_sample(values[a:b, c:d], (a, c), stride)
                    for c, d in itertools.pairwise(edges)
                ],
                axis=1,
            )
            for a, b in itertools.pairwise(edges)
        ]
        assert [r.shape[0] for r in rows] == list(counts)
        expected = values[stride // 2 :: stride, stride // 2 :: stride]
        np.testing.assert_array_equal(np.concatenate(rows), expected)


def test_the_overviews_of_a_raster_read_back_from_zarr_keep_their_own_chunks(tmp_path) -> None:
    """Read from Zarr, the raster's variables carry their stored 1024-pixel chunks as
    encoding; written on their own (as ``to_zarr`` or ``to_icechunk`` would), the overviews'
    chunks (128 samples at stride 24, two of them across 3,200 pixels) must win over them."""
    size = 3200
    values = np.random.default_rng(4).normal(size=(size, size)).astype(np.float32)
    coords = {"y": 200_000 - 32 * (np.arange(size) + 0.5), "x": 32 * (np.arange(size) + 0.5)}
    dataset = xr.Dataset({"elevation": (("y", "x"), values)}, coords=coords).chunk(1024)
    dataset.rio.write_crs("EPSG:3413").to_zarr(tmp_path / "r.zarr", zarr_format=3)
    stored = xr.open_zarr(tmp_path / "r.zarr", zarr_format=3)
    assert stored["elevation"].encoding["chunks"] == (1024, 1024)
    overview_pyramid(stored).to_zarr(tmp_path / "o.zarr", zarr_format=3)
    written = xr.open_zarr(tmp_path / "o.zarr", zarr_format=3)
    assert written["elevation_s24"].encoding["chunks"] == (128, 128)
    np.testing.assert_array_equal(stored_sample(written, 24)["elevation"], values[12::24, 12::24])
