"""rasterize_pixels burns exactly what GDAL's polygon filler burns (rasterio.features.rasterize)."""

import numpy as np
import pytest
import rasterio.features
import shapely
from affine import Affine

from entropice_core.spatial.pixelmap import rasterize_pixels


def gdal_labels(shapes: np.ndarray, height: int, width: int) -> np.ndarray:
    """GDAL's answer for shapes in pixel coordinates (a scale of 2 keeps them exact)."""
    doubled = shapely.transform(shapes, lambda xy: xy * 2.0)
    return rasterio.features.rasterize(
        ((g, i + 1) for i, g in enumerate(doubled) if not g.is_empty),
        out_shape=(height, width),
        transform=Affine.scale(2.0),
        fill=0,
        dtype="int32",
    )


def random_shape(rng: np.random.Generator) -> shapely.Geometry:
    """A star polygon (vertices on half pixels half the time), a frame, a multipolygon or
    nothing, partly outside the raster."""
    kind = rng.integers(0, 4)
    if kind == 0:
        k = rng.integers(3, 12)
        angle = np.sort(rng.uniform(0, 2 * np.pi, k))
        radius = rng.uniform(1, 15, k)
        centre = rng.uniform(0, 30, 2)
        points = centre + np.c_[radius * np.cos(angle), radius * np.sin(angle)]
        if rng.random() < 0.5:
            points = np.round(points * 2) / 2
        return shapely.make_valid(shapely.Polygon(points))
    if kind == 1:
        low = np.round(rng.uniform(-2, 20, 2) * 2) / 2
        high = low + np.round(rng.uniform(3, 15, 2) * 2) / 2
        return shapely.box(*low, *high).difference(shapely.box(*(low + 1), *(high - 1)))
    if kind == 2:
        corners = rng.uniform(-3, 30, (3, 2))
        sizes = rng.uniform(0.2, 5, (3, 2))
        return shapely.make_valid(
            shapely.MultiPolygon(
                [shapely.box(*c, *(c + s)) for c, s in zip(corners, sizes, strict=True)]
            )
        )
    return shapely.Polygon()


@pytest.mark.parametrize("seed", range(4))
def test_random_overlapping_shapes_burn_as_gdal_burns_them(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        shapes = np.array([random_shape(rng) for _ in range(rng.integers(1, 6))], dtype=object)
        height, width = int(rng.integers(5, 40)), int(rng.integers(5, 40))
        np.testing.assert_array_equal(
            rasterize_pixels(shapes, height, width), gdal_labels(shapes, height, width)
        )


@pytest.mark.parametrize("reverse_exterior", [False, True])
@pytest.mark.parametrize("reverse_hole", [False, True])
def test_edges_on_pixel_centres_do_not_depend_on_ring_direction(
    reverse_exterior: bool, reverse_hole: bool
) -> None:
    # A frame whose edges all lie on pixel centres: the hole's top row is burnt (GDAL burns
    # a horizontal edge on a centre line that runs right to left in its clockwise rings).
    exterior = [(1.5, 5.5), (1.5, 18), (11.5, 18), (11.5, 5.5), (1.5, 5.5)]
    hole = [(10.5, 17), (2.5, 17), (2.5, 6.5), (10.5, 6.5), (10.5, 17)]
    frame = shapely.Polygon(
        exterior[::-1] if reverse_exterior else exterior, [hole[::-1] if reverse_hole else hole]
    )
    labels = rasterize_pixels(np.array([frame], dtype=object), 20, 13)
    assert labels[6].tolist() == [0, 0] + [1] * 10 + [0]  # row of centre 6.5: burnt whole
    assert labels[7].tolist() == [0, 0, 1] + [0] * 8 + [1, 0]  # inside the hole: the sides
    np.testing.assert_array_equal(labels, gdal_labels(np.array([frame], dtype=object), 20, 13))


def test_shapes_beyond_the_raster_are_cut_at_its_edges() -> None:
    shape = shapely.Polygon([(-8.5, 19), (-7.5, 14), (8.5, 8), (16.5, 13.5), (3, 13.5)])
    labels = rasterize_pixels(np.array([shape], dtype=object), 40, 10)
    np.testing.assert_array_equal(labels, gdal_labels(np.array([shape], dtype=object), 40, 10))
    assert labels[13, :3].tolist() == [1, 1, 1] and labels[13, 3:].sum() == 0
