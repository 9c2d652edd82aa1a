"""DatasetEnsemble on synthetic L2 datasets: joins, missing values, targets, the spatial split.

Parents and neighbours are recomputed here with h3 and healpix-geo directly, not with the
project's grid helpers.
"""

import importlib.util
from pathlib import Path

import h3
import healpix_geo.nested as healpix
import numpy as np
import pytest
import xarray as xr

from entropice_core.config import AreaOfInterest, GridSpec, packaged_config_dir
from entropice_core.io.zarr import read_dataset, write_dataset
from entropice_core.layout import ASSET_PATHS, Layout
from entropice_core.ml.dataset import (
    DatasetEnsemble,
    SourceSpec,
    SplitSpec,
    Target,
    TrainingData,
    VariantSpec,
    as_device_array,
    fingerprint,
)
from entropice_core.spatial.grids import cell_ids

REPO = Path(__file__).resolve().parents[1]

LEVELS = ("h3_6", "healpix_9")


def l2(spec: GridSpec, ids: np.ndarray, **variables) -> xr.Dataset:
    """An L2 dataset: xdggs cell_ids plus the given variables."""
    coords = {"cell_ids": ("cell_ids", ids, spec.xdggs_attrs)}
    for _name, (dims, _) in variables.items():
        if "quantile" in dims:
            coords["quantile"] = [0.25, 0.75]
        if "year" in dims:
            coords["year"] = [2019, 2020, 2021]
    return xr.Dataset(variables, coords=coords)


def synthetic(key: str, seed: int = 0) -> tuple[xr.Dataset, xr.Dataset, np.ndarray]:
    """Labels and one feature source over the sample box; RTS where feature ``a`` is high."""
    spec = GridSpec.from_key(key)
    ids = np.sort(cell_ids(spec, AreaOfInterest.sample_region()))
    rng = np.random.default_rng(seed)
    a = rng.normal(size=ids.size)
    count = np.where(a + 0.5 * rng.normal(size=ids.size) > 0.3, rng.integers(1, 9, ids.size), 0)
    labels = l2(
        spec,
        ids,
        rts_count_all_years=(("cell_ids",), count),
        rts_density_all_years=(("cell_ids",), count * 10.0),
    )
    features = l2(
        spec,
        ids,
        a_mean=(("cell_ids",), a),
        b_std=(("cell_ids",), rng.normal(size=ids.size)),
        q=(("cell_ids", "quantile"), rng.normal(size=(ids.size, 2))),
        t_mean=(("cell_ids", "year"), rng.normal(size=(ids.size, 3))),
    )
    return labels, features, ids


def ensemble(**source) -> DatasetEnsemble:
    spec = {"asset": "terrain_features", "path": "x/{grid_level}.zarr", **source}
    return DatasetEnsemble(sources=[SourceSpec(**spec)])


@pytest.fixture(scope="module", params=LEVELS)
def built(request) -> tuple[str, TrainingData]:
    labels, features, _ = synthetic(request.param)
    return request.param, ensemble().build(labels, {"terrain_features": features})


def parents(key: str, ids: np.ndarray, level: int) -> np.ndarray:
    spec = GridSpec.from_key(key)
    if spec.grid == "h3":
        return np.array(
            [h3.str_to_int(h3.cell_to_parent(h3.int_to_str(int(c)), level)) for c in ids]
        )
    return ids // 4 ** (spec.level - level)


def neighbours(key: str, cell: int) -> set[int]:
    spec = GridSpec.from_key(key)
    if spec.grid == "h3":
        return {h3.str_to_int(c) for c in h3.grid_disk(h3.int_to_str(cell), 1)} - {cell}
    found = healpix.neighbours(np.array([cell], dtype=np.uint64), spec.level)[0]
    return {int(c) for c in found if c >= 0}


def test_no_cell_in_both_train_and_test(built) -> None:
    _, data = built
    train, test = set(data.X("train").index), set(data.X("test").index)
    assert train and test and not train & test
    roles = sum(data.mask(r).astype(int) for r in ("train", "test", "buffer", "excluded"))
    assert (roles == 1).all()


def test_blocks_are_parents_and_never_split_across_train_and_test(built) -> None:
    key, data = built
    level = int(data.dataset.attrs["block_level"])
    expected = parents(key, data.cell_ids, level)
    np.testing.assert_array_equal(data.dataset["block"].to_numpy(), expected)
    test_blocks = set(expected[data.mask("test")])
    assert not test_blocks & set(expected[data.mask("train")])
    # about 2000 km2 blocks: h3_4 (1,770 km2) and healpix_7 (2,594 km2)
    assert level == (4 if key == "h3_6" else 7)


def test_neighbours_of_test_cells_are_not_in_train(built) -> None:
    key, data = built
    train = set(data.X("train").index.tolist())
    touching = [c for c in data.X("test").index if neighbours(key, int(c)) & train]
    assert touching == []
    assert data.mask("buffer").any()


def test_cv_folds_are_blocked_and_buffered(built) -> None:
    key, data = built
    cells = data.X("train").index.to_numpy()
    blocks = data.groups()
    splits = data.cv_splits()
    assert len(splits) == 4
    validated = np.concatenate([v for _, v in splits])
    assert np.array_equal(np.sort(validated), np.arange(cells.size))
    for fit, validate in splits:
        assert not set(blocks[fit]) & set(blocks[validate])
        fit_cells = set(cells[fit].tolist())
        assert not any(neighbours(key, int(c)) & fit_cells for c in cells[validate])


def test_split_is_stratified_by_any_rts(built) -> None:
    _, data = built
    _, y_train, _ = data.xy(Target(), "train")
    _, y_test, _ = data.xy(Target(), "test")
    assert abs(y_train.mean() - y_test.mean()) < 0.1


def test_columns_flatten_extra_dims_and_summarise_years() -> None:
    labels, features, ids = synthetic("healpix_9")
    data = ensemble(summary=["mean", "trend"], missing="error").build(
        labels, {"terrain_features": features}
    )
    X = data.X()
    assert X.columns.tolist() == [
        "a_mean", "b_std", "q_0.25", "q_0.75", "t_mean", "t_mean_trend_per_decade"
    ]  # fmt: skip
    np.testing.assert_allclose(X["q_0.75"], features["q"].to_numpy()[:, 1].astype(np.float32))
    np.testing.assert_allclose(X["t_mean"], features["t_mean"].to_numpy().mean(axis=1), rtol=1e-6)
    assert data.dataset["feature_source"].to_numpy().tolist() == ["terrain_features"] * 6
    only_mean = ensemble(statistics=["mean"]).build(labels, {"terrain_features": features})
    assert only_mean.feature_names == ["a_mean", "t_mean"]
    assert data.X().index.tolist() == ids.tolist()


def tiny(count_2021: float = 2.0) -> tuple[xr.Dataset, xr.Dataset]:
    """Labels of 2020-2021 and a climate-like source of 2019-2021 on the sample's h3_6 cells;
    the first cell's values are written out so its rows can be computed by hand."""
    labels, features, ids = synthetic("h3_6")
    count = np.zeros((ids.size, 2))
    count[0] = [1.0, count_2021]
    labels = labels.assign_coords(year=[2020, 2021]).assign(
        rts_count=(("cell_ids", "year"), count),
        rts_density=(("cell_ids", "year"), count * 10.0),
    )
    labels["rts_count_all_years"][0] = 2
    climate = features.drop_vars(["b_std", "q", "quantile"])
    climate["t_mean"][0] = [1.0, 2.0, 4.0]  # 2019, 2020, 2021
    return labels, climate


def test_static_and_yearly_rows_equal_the_hand_computed_ones() -> None:
    labels, climate = tiny()
    source = SourceSpec(asset="climate_features", summary=["mean", "trend"], lags=[0, 1])
    built = DatasetEnsemble(sources=[source]).build(labels, {"climate_features": climate})
    first = int(built.cell_ids[0])
    # static: over the label years 2020-2021 only: mean (2 + 4) / 2, slope 2 per year
    static = built.X().loc[first]
    assert static["t_mean"] == pytest.approx(3.0)
    assert static["t_mean_trend_per_decade"] == pytest.approx(20.0)
    assert static["a_mean"] == pytest.approx(float(climate["a_mean"][0]))
    # yearly: one row per label year; the year itself and the one before
    yearly = built.with_variant(VariantSpec(sources=["climate_features"], time="yearly"))
    rows = yearly.X().loc[first]
    assert rows.index.tolist() == [2020, 2021]
    assert rows["t_mean"].tolist() == [2.0, 4.0]
    assert rows["t_mean_lag1"].tolist() == [1.0, 2.0]
    assert rows["a_mean"].tolist() == [pytest.approx(float(climate["a_mean"][0]))] * 2
    row_of_first = yearly.index().get_loc((first, 2021))
    assert yearly.target_values("count")[row_of_first] == 2.0
    assert built.target_values("count")[0] == 2.0
    # a lag reaching before the source's first year has no row
    lag2 = DatasetEnsemble(sources=[source.model_copy(update={"lags": [0, 2]})])
    two = lag2.build(labels, {"climate_features": climate})
    years = two.with_variant(VariantSpec(sources=["climate_features"], time="yearly"))
    labelled = years.X("train", "test", "buffer").index
    assert labelled.get_level_values("year").unique().tolist() == [2021]


def test_yearly_rows_of_a_cell_share_its_role_and_fold() -> None:
    labels, climate = tiny()
    ensemble = DatasetEnsemble(sources=[SourceSpec(asset="climate_features")])
    data = ensemble.build(labels, {"climate_features": climate}).with_variant(
        VariantSpec(sources=["climate_features"], time="yearly")
    )
    train = data.X("train").index.get_level_values("cell_id")
    test = data.X("test").index.get_level_values("cell_id")
    assert len(test) == 2 * data.summary()["test_cells"]
    assert not set(train) & set(test)
    blocks = data.dataset["block"].to_series()
    assert not set(blocks[train]) & set(blocks[test])
    for fit, validate in data.cv_splits():
        assert not set(train[fit]) & set(train[validate])


def test_bins_are_fitted_on_training_rows_only() -> None:
    labels, features, _ = synthetic("h3_6")
    data = ensemble().build(labels, {"terrain_features": features})
    target = Target(task="count", n_bins=3)
    edges = target.bin_edges(data)
    test = data.mask("test") & (data.target_values("count") > 0)
    changed = labels.copy(deep=True)
    changed["rts_count_all_years"][np.flatnonzero(test)] *= 100
    again = ensemble().build(changed, {"terrain_features": features})
    assert np.array_equal(again.mask("test"), data.mask("test"))
    assert target.bin_edges(again) == edges
    train_values = data.target_values("count")[data.mask("train")]
    q = np.quantile(train_values[train_values > 0], [1 / 3, 2 / 3], method="inverted_cdf")
    assert edges == [e for e in np.unique(q).tolist() if e < train_values.max()]


def test_unobserved_cells_and_years_are_absent_from_the_targets() -> None:
    labels, climate = tiny()
    ids = labels["cell_ids"].to_numpy()
    never = np.arange(10, 20)
    labels["rts_count_all_years"] = labels["rts_count_all_years"].astype(float)
    labels["rts_count_all_years"][never] = np.nan
    labels["rts_count"][never] = np.nan
    labels["rts_count"][25:30, 1] = np.nan  # 2021 not imaged there
    source = SourceSpec(asset="climate_features")
    data = DatasetEnsemble(sources=[source]).build(labels, {"climate_features": climate})
    assert data.mask("unlabelled")[never].all()
    labelled = set(data.X("train", "test", "buffer").index)
    assert not labelled & set(ids[never].tolist())
    yearly = data.with_variant(VariantSpec(sources=["climate_features"], time="yearly"))
    rows = set(yearly.X("train", "test", "buffer").index)
    assert not {(int(c), 2021) for c in ids[25:30]} & rows
    assert {(int(c), 2020) for c in ids[25:30]} <= rows | set(yearly.X("unlabelled").index)
    for view in (data, yearly):
        codes, _ = Target().encode(view)
        assert (codes[view.mask("train", "test")] >= 0).all()
        assert (codes[np.isnan(view.target_values("count"))] == -1).all()


def test_missing_values_per_source_policy() -> None:
    labels, features, ids = synthetic("healpix_9")
    holes = features.copy(deep=True)
    holes["a_mean"][:5] = np.nan
    # a source lacking some cells: they are missing there too
    partial = holes.isel(cell_ids=slice(0, -3))
    dropped = ensemble(missing="drop").build(labels, {"terrain_features": partial})
    excluded = set(ids[dropped.mask("excluded")].tolist())
    assert excluded == set(ids[:5].tolist()) | set(ids[-3:].tolist())
    filled = ensemble(missing="fill", fill_value=-9).build(labels, {"terrain_features": partial})
    assert not filled.mask("excluded").any()
    assert (filled.X()["a_mean"].to_numpy()[:5] == -9).all()
    kept = ensemble(missing="keep").build(labels, {"terrain_features": partial})
    assert np.isnan(kept.X()["a_mean"].to_numpy()[:5]).all()
    with pytest.raises(ValueError, match="missing values in 8 cells"):
        ensemble(missing="error").build(labels, {"terrain_features": partial})


def test_count_classes_are_quantile_bins_of_training_cells() -> None:
    labels, features, _ = synthetic("h3_6")
    data = ensemble().build(labels, {"terrain_features": features})
    codes, names = Target(task="count", n_bins=3).encode(data)
    value = data.dataset["rts_count"].to_numpy()
    assert names[0] == "0" and len(names) == codes.max() + 1
    assert ((codes == 0) == (value == 0)).all()
    # classes are ordered by value and every class occurs among the training cells
    order = np.argsort(value, kind="stable")
    assert (np.diff(codes[order]) >= 0).all()
    assert set(codes[data.mask("train")]) == set(range(len(names)))
    # binary: any RTS
    binary, binary_names = Target().encode(data)
    assert binary_names == ["no_rts", "rts"]
    np.testing.assert_array_equal(binary, (value > 0).astype(int))


def test_bad_inputs_give_clear_errors() -> None:
    labels, features, _ = synthetic("healpix_9")
    with pytest.raises(ValueError, match="no cells"):
        ensemble().build(labels.isel(cell_ids=slice(0, 0)), {"terrain_features": features})
    empty = features.copy(deep=True)
    for name in empty.data_vars:
        empty[name][:] = np.nan
    with pytest.raises(ValueError, match="the dataset would be empty"):
        ensemble().build(labels, {"terrain_features": empty})
    with pytest.raises(ValueError, match="has no variables"):
        ensemble(variables=["slope"]).build(labels, {"terrain_features": features})
    with pytest.raises(ValueError, match="was not given"):
        ensemble().build(labels, {})
    other, _, _ = synthetic("h3_6")
    with pytest.raises(ValueError, match="same grid level"):
        ensemble().build(labels, {"terrain_features": other})
    with pytest.raises(ValueError, match="too few"):
        DatasetEnsemble(
            sources=[SourceSpec(asset="terrain_features", path="x")],
            split=SplitSpec(block_level=3),
        ).build(labels, {"terrain_features": features})


def test_xarray_form_round_trips_through_zarr_with_the_same_fingerprint(tmp_path) -> None:
    labels, features, _ = synthetic("healpix_9")
    data = ensemble().build(labels, {"terrain_features": features})
    write_dataset(data.dataset, tmp_path / "d.zarr")
    again = TrainingData(read_dataset(tmp_path / "d.zarr"))
    assert fingerprint(again.dataset.load()) == fingerprint(data.dataset)
    assert again.X("train").equals(data.X("train"))
    versions = data.data_versions
    assert versions["terrain_features"]["sha256"] == fingerprint(features)
    changed = features.copy(deep=True)
    changed["a_mean"][0] += 1
    assert fingerprint(changed) != fingerprint(features)


def test_device_arrays() -> None:
    values = np.arange(6, dtype=np.float32).reshape(3, 2)
    assert isinstance(as_device_array(values), np.ndarray)
    assert isinstance(as_device_array(values, "cpu", "numpy"), np.ndarray)
    for device, backend in (("cuda", None), ("cuda", "torch"), ("cpu", "torch")):
        module = backend or "cupy"
        if importlib.util.find_spec(module) is None:  # the CPU install: say what to install
            with pytest.raises(ImportError, match="gpu extra"):
                as_device_array(values, device, backend)
            continue
        try:
            array = as_device_array(values, device, backend)
        except RuntimeError as err:  # the gpu extra without a usable GPU
            pytest.skip(f"{module} is installed but has no GPU: {err}")
        assert type(array).__module__.split(".")[0] == module
        back = array.get() if module == "cupy" else array.cpu().numpy()
        np.testing.assert_array_equal(back, values)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        as_device_array(values, "tpu")
    # the old mixed vocabulary is refused, not guessed: backends are not devices
    with pytest.raises(ValueError, match="unknown device 'cupy'"):
        as_device_array(values, "cupy")
    with pytest.raises(ValueError, match="'numpy' cannot run on device 'cuda'"):
        as_device_array(values, "cuda", "numpy")


def test_open_finds_sources_by_asset_in_the_storage_layout(tmp_path) -> None:
    """configs/dataset.toml names assets only; their stores are where the layout puts them."""
    labels, features, _ = synthetic("healpix_8")
    layout = Layout(tmp_path)
    write_dataset(labels, tmp_path / "darts" / "labels_healpix_8.zarr")
    write_dataset(features, tmp_path / "arcticdem" / "features_healpix_8.zarr")
    by_asset = DatasetEnsemble(sources=[SourceSpec(asset="terrain_features")])
    opened = by_asset.open(tmp_path, "healpix_8")
    built = by_asset.build(labels, {"terrain_features": features})
    assert opened.X().equals(built.X())
    versions = opened.data_versions
    features_path = layout.asset_path("terrain_features", "healpix_8")
    assert versions["terrain_features"]["path"] == str(features_path)
    assert versions["rts_labels"]["path"] == str(layout.rts_labels("healpix_8"))
    # an explicit path (a dataset the layout does not know) still wins, with the layout's
    # store gone (its public path is a link to the published version)
    write_dataset(features, tmp_path / "elsewhere" / "healpix_8.zarr")
    (tmp_path / "arcticdem" / "features_healpix_8.zarr").unlink()
    explicit = DatasetEnsemble(
        sources=[SourceSpec(asset="terrain_features", path="elsewhere/{grid_level}.zarr")]
    )
    assert explicit.open(tmp_path, "healpix_8").X().equals(built.X())


def test_the_project_dataset_config_names_assets_not_paths() -> None:
    config = DatasetEnsemble.from_toml(REPO / "configs" / "dataset.toml")
    assert config.labels.path is None and all(s.path is None for s in config.sources)
    assert all(asset in ASSET_PATHS for asset in config.assets())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("n_folds = 4", "n_folds = 4 4"),
            r"is not valid TOML: .*\(at line \d+, column \d+\): `n_folds = 4 4`",
        ),
        (
            ("n_folds = 4", 'n_folds = "four"'),
            r"dataset.toml: split.n_folds: Input should be a valid integer",
        ),
        (("test_fraction", "test_fracton"), r"dataset.toml: split.test_fracton: unknown key"),
        (
            ("lags = [0, 1]", "lags = 1"),
            r"dataset.toml: sources.1.lags: Input should be a valid list",
        ),
    ],
)
def test_dataset_config_errors_name_the_file_and_key(tmp_path, edit, message) -> None:
    path = tmp_path / "dataset.toml"
    path.write_text((packaged_config_dir() / "dataset.toml").read_text().replace(*edit))
    with pytest.raises(ValueError, match=message) as err:
        DatasetEnsemble.from_toml(path)
    assert str(err.value).startswith(str(path))
    with pytest.raises(FileNotFoundError, match=r"config file .*absent.toml does not exist"):
        DatasetEnsemble.from_toml(tmp_path / "absent.toml")
