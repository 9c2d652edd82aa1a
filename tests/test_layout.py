"""The storage layout: one module names every path under ENTROPICE_DATA_DIR."""

from pathlib import Path

import pytest

from entropice_core.layout import ASSET_PATHS, Layout, template_fields


def test_paths_follow_the_documented_layout(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    # architecture.md, "Storage layout", spelled out independently
    assert layout.watermask == tmp_path / "watermask/watermask.parquet"
    assert layout.grid_cells("h3_5") == tmp_path / "grids/h3_5.parquet"
    assert layout.asset_path("darts_coverage") == tmp_path / "darts/coverage.parquet"
    assert layout.rts_labels("healpix_8") == tmp_path / "darts/labels_healpix_8.zarr"
    assert layout.table_path("rts_labels", "h3_3") == tmp_path / "darts/labels_h3_3.parquet"
    assert layout.era5_daily(2020) == tmp_path / "era5/daily/2020.zarr"
    assert layout.asset_path("climate_features", "h3_4") == tmp_path / "era5/features_h3_4.zarr"
    assert layout.terrain_derivatives == tmp_path / "arcticdem/derivatives.icechunk"
    assert layout.asset_path("terrain_statistics") == tmp_path / "arcticdem/statistics.zarr"
    assert layout.training_dataset("h3_6") == tmp_path / "datasets/h3_6.zarr"
    assert (
        layout.experiment("h3_6", "espa-binary") == tmp_path / "training-results/h3_6/espa-binary"
    )
    assert layout.predictions("h3_6", "rf-binary") == (
        tmp_path / "training-results/h3_6/rf-binary/predictions.parquet"
    )
    assert layout.experiment_summary == tmp_path / "training-results/summary.parquet"
    assert layout.source("era5") == tmp_path / "sources/era5"


def test_partitioned_paths_need_their_keys(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with pytest.raises(ValueError, match="needs grid_level"):
        layout.asset_path("grid_cells")
    with pytest.raises(ValueError, match="needs experiment"):
        layout.asset_path("trained_model", grid_level="h3_5")
    with pytest.raises(KeyError, match="no place in the storage layout"):
        layout.asset_path("grid_cell")
    with pytest.raises(ValueError, match="unknown source"):
        layout.source("modis")
    assert all(
        set(template_fields(t)) <= {"grid_level", "year", "experiment"}
        for t in ASSET_PATHS.values()
    )


def test_yearly_stores_lists_only_computed_years_in_order(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert layout.era5_yearly_stores() == []
    for year in (2021, 2019, 2020):
        layout.era5_yearly(year).mkdir(parents=True)
    (layout.era5_yearly(2022).parent / ".2022.zarr.abcd.tmp").mkdir()  # a write in progress
    assert [p.stem for p in layout.era5_yearly_stores()] == ["2019", "2020", "2021"]


def test_an_explicit_dataset_path_overrides_the_layout(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    assert (
        layout.dataset_path("terrain_features", "h3_3") == tmp_path / "arcticdem/features_h3_3.zarr"
    )
    assert layout.dataset_path("mine", "h3_3", "x/{grid_level}.zarr") == tmp_path / "x/h3_3.zarr"
