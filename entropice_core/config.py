"""Typed configuration shared by the library, the CLI and the Dagster layer.

This is the only module of ``entropice_core`` that reads environment variables.
"""

from __future__ import annotations

import os
from functools import cached_property
from importlib.resources import files
from pathlib import Path
from typing import Literal

import shapely
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from shapely.geometry.base import BaseGeometry

GridName = Literal["h3", "healpix"]

#: Levels each grid supports at all (the libraries' own limits).
GRID_LEVEL_RANGES: dict[str, range] = {"h3": range(0, 16), "healpix": range(0, 30)}

#: The nine default ``grid_level`` partitions (the seed's H3 3-6 and HEALPix 6-10).
DEFAULT_GRID_LEVELS: tuple[str, ...] = (
    "h3_3",
    "h3_4",
    "h3_5",
    "h3_6",
    "healpix_6",
    "healpix_7",
    "healpix_8",
    "healpix_9",
    "healpix_10",
)

#: The embedded sample region: a ~300 x 300 km box over the Peel Plateau and the Mackenzie
#: Delta (Northwest Territories / Yukon), one of the densest RTS hotspots, reaching the
#: Beaufort Sea coast in the north so that the ocean mask matters.
SAMPLE_REGION_BBOX: tuple[float, float, float, float] = (-138.5, 66.5, -131.5, 69.2)

#: Default southern limit of real (Arctic-wide) runs, in degrees north.
DEFAULT_NORTH_OF_LAT = 50.0

ENV_DATA_DIR = "ENTROPICE_DATA_DIR"
ENV_AOI = "ENTROPICE_AOI"
ENV_CONFIG_DIR = "ENTROPICE_CONFIG_DIR"
#: Earth Engine service account (AlphaEarth): e-mail, JSON key (a path, or its text), project.
ENV_EE_SERVICE_ACCOUNT = "ENTROPICE_EE_SERVICE_ACCOUNT"
ENV_EE_KEY_FILE = "ENTROPICE_EE_KEY_FILE"
ENV_EE_KEY_DATA = "ENTROPICE_EE_KEY_DATA"
ENV_EE_PROJECT = "ENTROPICE_EE_PROJECT"
#: An OAuth access token for the AlphaEarth COGs on GCS (instead of the service-account key).
ENV_GCS_TOKEN = "ENTROPICE_GCS_TOKEN"


def config_dir_from_env() -> Path:
    """Return the experiment config folder: ENTROPICE_CONFIG_DIR, else the packaged configs.

    Returns
    -------
    Path
        The folder holding ``<model>-<task>.toml`` and ``dataset.toml``.
    """
    folder = os.environ.get(ENV_CONFIG_DIR)
    return Path(folder).absolute() if folder else packaged_config_dir()


def packaged_config_dir() -> Path:
    """Return the folder of the experiment and dataset configs shipped inside the package.

    Found through ``importlib.resources`` so that it works from a checkout and from an installed
    wheel alike; the repository's ``configs/`` is a link to it.

    Returns
    -------
    Path
        ``entropice_core/configs``.
    """
    return Path(str(files("entropice_core").joinpath("configs")))


# --- where work runs and which array library holds the data ------------------------------------

#: Where work runs: the host CPU or a CUDA GPU. The one knob users set (experiments, inference,
#: terrain, Dagster configs).
Device = Literal["cpu", "cuda"]
#: Which array library holds the data. ``numpy`` lives on the CPU, ``cupy`` on CUDA, ``torch``
#: on either.
ArrayBackend = Literal["numpy", "cupy", "torch"]
#: The library each device uses unless a component asks for another one.
DEFAULT_BACKEND: dict[str, str] = {"cpu": "numpy", "cuda": "cupy"}
#: The devices each array library can hold data on.
BACKEND_DEVICES: dict[str, tuple[str, ...]] = {
    "numpy": ("cpu",),
    "cupy": ("cuda",),
    "torch": ("cpu", "cuda"),
}


def resolve_backend(device: str, backend: str | None = None) -> ArrayBackend:
    """Return the array library for ``device``: ``backend`` if given, else the default.

    The one mapping between the two vocabularies: ``cpu`` -> ``numpy``, ``cuda`` -> ``cupy``
    (``torch`` on request, on either device).

    Parameters
    ----------
    device : {"cpu", "cuda"}
        Where the work runs.
    backend : {"numpy", "cupy", "torch"}, optional
        The array library asked for; None picks the device's default.

    Returns
    -------
    ArrayBackend
        The array library's name.

    Raises
    ------
    ValueError
        For unknown names and impossible pairs (numpy on cuda, cupy on cpu), naming the valid
        ones.
    """
    if device not in DEFAULT_BACKEND:
        raise ValueError(f"unknown device {device!r}: use one of {', '.join(DEFAULT_BACKEND)}")
    if backend is None:
        return DEFAULT_BACKEND[device]  # type: ignore[return-value]
    if backend not in BACKEND_DEVICES:
        raise ValueError(
            f"unknown array backend {backend!r}: use one of {', '.join(BACKEND_DEVICES)}"
        )
    if device not in BACKEND_DEVICES[backend]:
        raise ValueError(
            f"array backend {backend!r} cannot run on device {device!r}; {backend} runs on "
            f"{' or '.join(BACKEND_DEVICES[backend])}"
        )
    return backend  # type: ignore[return-value]


class GridSpec(BaseModel):
    """One discrete global grid at one level, e.g. H3 resolution 5 or HEALPix level 8.

    ``GridSpec.from_key("h3_5")`` is the only parser of grid_level keys in the project.
    HEALPix cells use the NESTED indexing scheme on the sphere (no ellipsoid), the convention
    xdggs applies when a dataset's attrs carry no ``ellipsoid``.
    """

    model_config = ConfigDict(frozen=True)

    grid: GridName
    level: int

    @model_validator(mode="after")
    def _level_in_range(self) -> GridSpec:
        valid = GRID_LEVEL_RANGES[self.grid]
        if self.level not in valid:
            raise ValueError(
                f"{self.grid} level {self.level} does not exist: {self.grid} levels run "
                f"{valid.start}-{valid.stop - 1}. The default grid levels are "
                f"{', '.join(DEFAULT_GRID_LEVELS)}."
            )
        return self

    @classmethod
    def from_key(cls, key: str) -> GridSpec:
        """Parse a grid_level key such as ``h3_5`` or ``healpix_10``.

        Parameters
        ----------
        key : str
            ``<grid>_<level>``; surrounding whitespace and case are ignored.

        Returns
        -------
        GridSpec
            The grid and level.

        Raises
        ------
        ValueError
            If ``key`` is not of that form or the level does not exist on the grid.
        """
        grid, sep, level = key.strip().lower().partition("_")
        if not sep or grid not in GRID_LEVEL_RANGES or not level.isdigit():
            raise ValueError(
                f"{key!r} is not a grid level key. Write <grid>_<level> with grid 'h3' "
                f"(levels 0-15) or 'healpix' (levels 0-29); the defaults are "
                f"{', '.join(DEFAULT_GRID_LEVELS)}."
            )
        return cls.model_validate({"grid": grid, "level": int(level)})

    @property
    def key(self) -> str:
        """The grid_level key, e.g. ``h3_5`` (the inverse of :meth:`from_key`)."""
        return f"{self.grid}_{self.level}"

    @property
    def xdggs_attrs(self) -> dict[str, str | int]:
        """Attributes ``xdggs.decode`` needs on the ``cell_ids`` coordinate."""
        if self.grid == "h3":
            return {"grid_name": "h3", "level": self.level}
        return {"grid_name": "healpix", "level": self.level, "indexing_scheme": "nested"}

    def __str__(self) -> str:
        """Return the grid_level key."""
        return self.key


def parse_bbox(text: str) -> tuple[float, float, float, float]:
    """Parse ``minlon,minlat,maxlon,maxlat`` (minlon > maxlon means the box crosses 180).

    Parameters
    ----------
    text : str
        Four comma-separated numbers in degrees; spaces are ignored.

    Returns
    -------
    tuple of float
        ``(minlon, minlat, maxlon, maxlat)``; the ranges are checked by
        :class:`AreaOfInterest`, not here.

    Raises
    ------
    ValueError
        If there are not four values or one is not a number.
    """
    parts = [p for p in text.replace(" ", "").split(",") if p]
    if len(parts) != 4:
        raise ValueError(
            f"bbox {text!r} must have four numbers: minlon,minlat,maxlon,maxlat "
            "(e.g. -138.5,66.5,-131.5,69.2)"
        )
    try:
        minlon, minlat, maxlon, maxlat = (float(p) for p in parts)
    except ValueError as err:
        raise ValueError(f"bbox {text!r} holds a value that is not a number") from err
    return minlon, minlat, maxlon, maxlat


#: Keywords of area-of-interest specs.
AOI_WORDS = ("sample", "arctic")
#: Suffixes of the vector files an area of interest is read from.
VECTOR_SUFFIXES = (".parquet", ".gpkg", ".geojson", ".json", ".shp", ".fgb")
#: The valid area-of-interest forms, for messages.
AOI_FORMS = (
    "'sample' (the embedded sample region), 'arctic' (north of 50N), 'north-of:LAT' "
    "(e.g. north-of:60), a bbox 'minlon,minlat,maxlon,maxlat' (e.g. -138.5,66.5,-131.5,69.2; "
    "minlon > maxlon crosses 180) or the path of a vector file "
    f"({', '.join(VECTOR_SUFFIXES)})"
)


def _aoi_error(text: object, reason: str) -> ValueError:
    return ValueError(f"area of interest {text!r}: {reason}. Valid forms: {AOI_FORMS}")


class AreaOfInterest(BaseModel):
    """Where to build cells: a lon/lat box or a polygon, always in EPSG:4326.

    A box with ``minlon > maxlon`` crosses the antimeridian. Polygons read from files are
    reprojected to EPSG:4326; a file without a CRS is refused (there is no safe guess).
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str = Field(description="Short label for logs and metadata.")
    bbox: tuple[float, float, float, float] | None = Field(
        default=None, description="minlon, minlat, maxlon, maxlat in degrees."
    )
    wkt: str | None = Field(default=None, description="Polygon in EPSG:4326 as WKT.")

    @field_validator("bbox")
    @classmethod
    def _check_bbox(cls, bbox):
        if bbox is None:
            return bbox
        minlon, minlat, maxlon, maxlat = bbox
        for lon in (minlon, maxlon):
            if not -180 <= lon <= 180:
                raise ValueError(
                    f"longitude {lon} is outside -180..180: give longitudes in degrees east "
                    "(use minlon > maxlon for a box that crosses 180)"
                )
        for lat in (minlat, maxlat):
            if not -90 <= lat <= 90:
                raise ValueError(f"latitude {lat} is outside -90..90")
        if minlat >= maxlat:
            raise ValueError(
                f"inverted or empty bbox: minlat {minlat} >= maxlat {maxlat}; "
                "write minlon,minlat,maxlon,maxlat with minlat < maxlat"
            )
        if minlon == maxlon:
            raise ValueError(f"empty bbox: minlon == maxlon == {minlon}")
        return bbox

    @model_validator(mode="after")
    def _one_shape(self) -> AreaOfInterest:
        if (self.bbox is None) == (self.wkt is None):
            raise ValueError("an area of interest needs exactly one of bbox or wkt")
        if self.wkt is not None:
            geom = shapely.from_wkt(self.wkt)
            if geom.is_empty or geom.area == 0:
                raise ValueError(f"area of interest {self.name!r} is empty")
        return self

    @classmethod
    def from_bbox(cls, bbox: str | tuple[float, float, float, float], name: str | None = None):
        """Build an area from a lon/lat box.

        Parameters
        ----------
        bbox : str or tuple of float
            ``minlon,minlat,maxlon,maxlat`` as a string (see :func:`parse_bbox`) or a tuple.
        name : str, optional
            Label; default ``"bbox <values>"``.

        Returns
        -------
        AreaOfInterest
            The box area.
        """
        values = parse_bbox(bbox) if isinstance(bbox, str) else bbox
        return cls(name=name or "bbox " + ",".join(f"{v:g}" for v in values), bbox=values)

    @classmethod
    def north_of(cls, lat: float = DEFAULT_NORTH_OF_LAT) -> AreaOfInterest:
        """Return everything north of ``lat`` (the default for real, Arctic-wide runs).

        Parameters
        ----------
        lat : float, optional
            Southern edge in degrees (default :data:`DEFAULT_NORTH_OF_LAT`).

        Returns
        -------
        AreaOfInterest
            The box from ``lat`` to the pole, all longitudes.
        """
        return cls(name=f"north of {lat:g}N", bbox=(-180.0, lat, 180.0, 90.0))

    @classmethod
    def sample_region(cls) -> AreaOfInterest:
        """Return the embedded sample region (Peel Plateau, :data:`SAMPLE_REGION_BBOX`).

        Returns
        -------
        AreaOfInterest
            The sample region's box.
        """
        return cls(name="sample region (Peel Plateau)", bbox=SAMPLE_REGION_BBOX)

    @classmethod
    def from_geometry(cls, geom: BaseGeometry, name: str) -> AreaOfInterest:
        """Build an area from a polygon in EPSG:4326.

        Parameters
        ----------
        geom : shapely.geometry.base.BaseGeometry
            (Multi)Polygon in EPSG:4326, inside -180..180 (not crossing the antimeridian).
        name : str
            Label for logs and metadata.

        Returns
        -------
        AreaOfInterest
            The area, stored as WKT.

        Raises
        ------
        ValueError
            If the geometry has longitudes outside -180..180.
        """
        minx, _, maxx, _ = geom.bounds
        if minx < -180 or maxx > 180:
            raise ValueError(
                f"area of interest {name!r} has longitudes outside -180..180 "
                f"({minx:g}..{maxx:g}); split it at the antimeridian or give a bbox with "
                "minlon > maxlon"
            )
        return cls(name=name, wkt=geom.wkt)

    @classmethod
    def from_file(cls, path: str | Path) -> AreaOfInterest:
        """Read the union of all polygons in a vector file (GeoParquet, GeoPackage, ...).

        Parameters
        ----------
        path : str or Path
            Vector file with a CRS; it is reprojected to EPSG:4326.

        Returns
        -------
        AreaOfInterest
            The union, named after the file.
        """
        path = Path(path)
        from entropice_core.io.vector import read_vector  # geopandas only for a file AOI

        frame = read_vector(path, "area of interest file")
        geom = shapely.union_all(shapely.make_valid(frame.to_crs(4326).geometry.values))
        return cls.from_geometry(geom, name=path.name)

    @staticmethod
    def check_spec(text: str) -> str:
        """Check the form of an area-of-interest spec without reading any file; return it.

        Surrounding whitespace and other case are refused rather than fixed (``"sample "`` or
        ``"Sample"`` is an error, not the sample region), so a near-miss never silently becomes
        another area.

        Parameters
        ----------
        text : str
            The spec.

        Returns
        -------
        str
            ``text`` unchanged.

        Raises
        ------
        ValueError
            One line naming the valid forms (:data:`AOI_FORMS`).
        """
        if not isinstance(text, str) or not text:
            raise _aoi_error(text, "the spec is empty")
        if text != text.strip():
            raise _aoi_error(text, "remove the surrounding whitespace")
        lowered = text.lower()
        for word in AOI_WORDS:
            if lowered == word and text != word:
                raise _aoi_error(text, f"write {word!r} in lower case")
        if text in AOI_WORDS:
            return text
        if lowered.replace("_", "-").replace(" ", "").startswith(("north-of", "northof")):
            prefix, sep, lat = text.partition(":")
            if prefix != "north-of" or not sep:
                raise _aoi_error(text, "write north-of:LAT, e.g. north-of:60")
            try:
                value = float(lat)
            except ValueError:
                raise _aoi_error(
                    text, f"{lat!r} is not a latitude in degrees (e.g. north-of:60)"
                ) from None
            if not -90 < value < 90:
                raise _aoi_error(text, f"latitude {value:g} is outside -90..90")
            return text
        suffix = Path(text).suffix.lower()
        if "," not in text:
            if suffix in VECTOR_SUFFIXES:
                return text
            if suffix:
                raise _aoi_error(
                    text,
                    f"{suffix} is not a vector format read here (use {', '.join(VECTOR_SUFFIXES)})",
                )
            raise _aoi_error(text, "not a keyword, bbox or vector file path")
        try:
            parse_bbox(text)
        except ValueError as err:
            raise _aoi_error(text, str(err)) from None
        return text

    @classmethod
    def parse(cls, text: str) -> AreaOfInterest:
        """Read ``sample``, ``arctic``, ``north-of:LAT``, a bbox string or a vector file path.

        The spec is checked by :meth:`check_spec` first (no whitespace fixing, no case
        folding).

        Parameters
        ----------
        text : str
            The spec.

        Returns
        -------
        AreaOfInterest
            The area it names (a vector file is read).

        Raises
        ------
        ValueError
            One line that names the valid forms.
        """
        cls.check_spec(text)
        if text == "sample":
            return cls.sample_region()
        if text == "arctic":
            return cls.north_of()
        try:
            if text.startswith("north-of:"):
                return cls.north_of(float(text.split(":", 1)[1]))
            if "," not in text:
                return cls.from_file(text)
            return cls.from_bbox(text)
        except ValidationError as err:
            reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise _aoi_error(text, reason) from None
        except (FileNotFoundError, ValueError) as err:
            raise _aoi_error(text, " ".join(str(err).split())) from None

    @cached_property
    def geometry(self) -> BaseGeometry:
        """The area as (Multi)Polygon in EPSG:4326, split at the antimeridian."""
        if self.bbox is None:
            return shapely.from_wkt(self.wkt)
        minlon, minlat, maxlon, maxlat = self.bbox
        if minlon > maxlon:
            return shapely.MultiPolygon(
                [
                    shapely.box(minlon, minlat, 180, maxlat),
                    shapely.box(-180, minlat, maxlon, maxlat),
                ]
            )
        return shapely.box(minlon, minlat, maxlon, maxlat)

    @property
    def parts(self) -> list[shapely.Polygon]:
        """The polygons of :attr:`geometry` (two for a box that crosses the antimeridian)."""
        geom = self.geometry
        return list(geom.geoms) if hasattr(geom, "geoms") else [geom]


class GridCellsConfig(BaseModel):
    """How grid cells are built."""

    model_config = ConfigDict(frozen=True)

    min_land_fraction: float = Field(
        default=0.0,
        ge=0.0,
        lt=1.0,
        description="Cells whose land fraction is at or below this are dropped as ocean.",
    )
    mask_resolution_deg: float = Field(
        default=1 / 120,
        gt=0,
        le=1,
        description="Pixel size of the lat/lon raster on which land fractions are counted "
        "(1/120 degree = 30 arc seconds, the resolution of global-land-mask).",
    )


class WatermaskConfig(BaseModel):
    """Where water polygons come from."""

    model_config = ConfigDict(frozen=True)

    source: Literal["global-land-mask", "file"] = "global-land-mask"
    path: Path | None = Field(
        default=None, description="GeoParquet/GeoPackage of water polygons (source='file')."
    )
    tile_deg: float = Field(
        default=5.0, gt=0, le=90, description="Water polygons are cut into tiles of this size."
    )

    @model_validator(mode="after")
    def _file_needs_path(self) -> WatermaskConfig:
        if self.source == "file" and self.path is None:
            raise ValueError("watermask source 'file' needs a path to a water-polygon file")
        return self


class Settings(BaseModel):
    """Process-wide settings read from the environment."""

    data_dir: Path = Field(description="Root of the storage hierarchy (ENTROPICE_DATA_DIR).")
    aoi: str = Field(description="Area of interest spec (ENTROPICE_AOI), see AreaOfInterest.parse.")
    config_dir: Path = Field(
        default_factory=packaged_config_dir,
        description="Folder of experiment configs <model>-<task>.toml and dataset.toml "
        "(ENTROPICE_CONFIG_DIR; default: the configs shipped with the package).",
    )

    @field_validator("aoi")
    @classmethod
    def _aoi_form(cls, value: str) -> str:
        return AreaOfInterest.check_spec(value)

    @property
    def is_sample(self) -> bool:
        """The run covers the embedded sample region (offline source clients by default)."""
        return self.aoi == "sample"

    @classmethod
    def from_env(cls) -> Settings:
        """Read ENTROPICE_DATA_DIR (default ``./data``), ENTROPICE_AOI and ENTROPICE_CONFIG_DIR.

        Returns
        -------
        Settings
            The settings; the paths are absolute.

        Raises
        ------
        ValueError
            If ENTROPICE_AOI is not a valid spec (the message names the variable).
        """
        aoi = os.environ.get(ENV_AOI, "sample")
        try:
            AreaOfInterest.check_spec(aoi)
        except ValueError as err:
            raise ValueError(f"{ENV_AOI}: {err}") from None
        config_dir = os.environ.get(ENV_CONFIG_DIR)
        return cls(
            data_dir=Path(os.environ.get(ENV_DATA_DIR, "data")).absolute(),
            aoi=aoi,
            **({"config_dir": Path(config_dir).absolute()} if config_dir else {}),
        )


class EarthEngineCredentials(BaseModel):
    """Earth Engine service-account credentials as the environment gives them.

    The CLI's source; the Dagster resource reads the same variables through ``dg.EnvVar``.
    Unset ones are None: the client then fails with one line naming them. The key's text never
    shows in ``repr`` or ``str``.
    """

    service_account: str | None = Field(default=None, description=ENV_EE_SERVICE_ACCOUNT)
    key_file: str | None = Field(default=None, description=ENV_EE_KEY_FILE)
    key_data: SecretStr | None = Field(default=None, description=ENV_EE_KEY_DATA)
    project: str | None = Field(default=None, description=ENV_EE_PROJECT)
    gcs_token: SecretStr | None = Field(default=None, description=ENV_GCS_TOKEN)

    @classmethod
    def from_env(cls) -> EarthEngineCredentials:
        """Read ``ENTROPICE_EE_*`` and ``ENTROPICE_GCS_TOKEN`` (empty counts as unset).

        Returns
        -------
        EarthEngineCredentials
            The values found.
        """

        def get(name: str) -> str | None:
            return os.environ.get(name) or None

        key_data, token = get(ENV_EE_KEY_DATA), get(ENV_GCS_TOKEN)
        return cls(
            service_account=get(ENV_EE_SERVICE_ACCOUNT),
            key_file=get(ENV_EE_KEY_FILE),
            key_data=SecretStr(key_data) if key_data else None,
            project=get(ENV_EE_PROJECT),
            gcs_token=SecretStr(token) if token else None,
        )
