"""What the UI shows of stored tables: cell ids as the grids write them, described columns."""

import geopandas as gpd
import h3
import pandas as pd
import shapely

from entropice_dagster.io_managers import _column_schema
from entropice_dagster.metadata import frame_summary, markdown_table


def test_h3_ids_show_as_hex_and_healpix_ids_as_integers() -> None:
    hexes = [h3.latlng_to_cell(68.0 + i / 10, -135.0, 6) for i in range(3)]
    cells = gpd.GeoDataFrame(
        {"cell_id": [h3.str_to_int(c) for c in hexes], "land_fraction": [1.0, 0.5, 0.25]},
        geometry=[shapely.Point(-135, 68)] * 3,
        crs=4326,
    )
    preview = frame_summary(cells)["preview"].value
    assert all(c in preview for c in hexes) and "e+17" not in preview
    healpix = cells.assign(cell_id=[46763, 46764, 12582911])
    preview = frame_summary(healpix)["preview"].value
    assert all(str(c) in preview for c in (46763, 46764, 12582911))
    features = pd.DataFrame({"slope_mean": [1.234567]}, index=pd.Index([cells.cell_id[0]]))
    features.index.name = "cell_id"
    assert hexes[0] in markdown_table(features, 2).value


def test_stored_columns_are_described() -> None:
    frame = pd.DataFrame(
        columns=["cell_id", "proba_rts", "cv_f1_macro", "cv_f1_macro_std", "baseline_test_roc_auc"]
    )
    schema = {c.name: c.description for c in _column_schema(frame).columns}
    assert schema["cell_id"].startswith("Grid cell id")
    assert schema["proba_rts"] == "Predicted probability of this class"
    assert "cross-validation" in schema["cv_f1_macro"]
    assert "Standard deviation" in schema["cv_f1_macro_std"]
    assert "baseline" in schema["baseline_test_roc_auc"]
