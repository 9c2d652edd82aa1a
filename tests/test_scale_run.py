"""The scale run (benchmarks/scale.py, issue 20) at a reduced size: its workers' memory stays
under their limit and none is lost.

The 4x run's workers have 6 GB for a mosaic of 0.55 Gpx; here a region of 1/16 of the
sample's area (one ArcticDEM tile, 9.8 Mpx) runs on two workers of 1.5 GB: not a
proportional limit (a worker's libraries alone take about 0.3 GB), but one that the
derivatives' tiles and the exact pass must share with them. The exact pass runs on the
workers here in one window; its windows are tested in tests/test_levels.py.
"""

from pathlib import Path

import cloudpickle
import pytest
from benchmark_module import load_benchmark
from dask.utils import parse_bytes

from entropice_core.config import SAMPLE_REGION_BBOX
from entropice_core.ingest.arcticdem import tiles_for
from entropice_core.io.assets import load_dataset
from entropice_core.layout import Layout
from entropice_core.sample import region_bbox, sample_region_files
from entropice_core.sample.world import polar_box

LIMIT = "1.5GB"


def _scale_module():
    module = load_benchmark("scale")
    # its functions go to the workers by value: they cannot import a file-loaded module
    cloudpickle.register_pickle_by_value(module)
    return module


@pytest.mark.parametrize("scale", [1 / 16, 1 / 4, 4, 16])
def test_a_scale_region_has_that_many_times_the_sample_area_and_only_dem_tiles(scale):
    bbox = region_bbox(scale)
    ratio = polar_box(bbox).area / polar_box(SAMPLE_REGION_BBOX).area
    assert ratio == pytest.approx(scale, rel=2e-3)
    files = sample_region_files(Path("data"), scale=scale)
    assert files.arcticdem and not (files.era5 or files.darts or files.alphaearth)
    assert len(files.arcticdem) == len(tiles_for(bbox))
    if scale == 1 / 16:
        assert len(files.arcticdem) == 1  # the CI run's region lies in one tile


def test_the_sample_region_is_scale_one_and_scales_out_of_range_fail():
    assert region_bbox(1) == SAMPLE_REGION_BBOX
    assert sample_region_files(Path("data")).era5
    for scale in (0, 1 / 100, 65):
        with pytest.raises(ValueError, match="scale must be between"):
            region_bbox(scale)


@pytest.mark.slow
def test_reduced_scale_run_keeps_every_worker_under_its_memory_limit(tmp_path):
    scale = _scale_module()
    stages = scale.run_scale(tmp_path, 1 / 16, workers=2, memory_limit=LIMIT, report=print)
    assert [s.name for s in stages] == ["tiles", "derivatives", "terrain features"]
    limit = parse_bytes(LIMIT)
    for stage in stages:
        assert stage.lost == 0, f"{stage.name}: a worker died or restarted"
        assert len(stage.peak) == 2, f"{stage.name}: sampled {len(stage.peak)} workers"
        assert max(stage.peak.values()) < limit, f"{stage.name}: {stage.peak}"
        assert stage.spilled == 0, f"{stage.name}: spilled {stage.spilled} bytes"
    features = stages[-1]
    assert features.windows >= 1  # the exact pass ran on the workers
    statistics = load_dataset(Layout(tmp_path), "terrain_statistics")
    for key in scale.LEVELS:
        cells = statistics.children[key].to_dataset()
        assert cells.sizes["cell_ids"] > 10
        assert float(cells["elevation_mean"].notnull().mean()) > 0.5
