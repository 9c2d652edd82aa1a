"""Areas and great circles on the sphere and the WGS84 ellipsoid, vectorised over many cells.

pyproj's ``Geod`` computes one polygon per call (about 4 us each); grid cells come in millions,
so the same geodesic polygon area is computed here for whole arrays of rings at once. Tests check
every function against ``pyproj.Geod``.
"""

from __future__ import annotations

import numpy as np

#: WGS84 semi-major axis and flattening.
WGS84_A_KM = 6378.137
WGS84_F = 1 / 298.257223563
#: Radius of the sphere with the WGS84 ellipsoid's surface area (the "authalic" radius). H3
#: (``h3.cell_area``) and the HEALPix areas of this project use it.
AUTHALIC_RADIUS_KM = 6371.007180918475


def _authalic_q(sin_phi: np.ndarray, e: float) -> np.ndarray:
    e_sin = e * sin_phi
    return (1 - e**2) * (sin_phi / (1 - e_sin**2) - np.log((1 - e_sin) / (1 + e_sin)) / (2 * e))


def authalic_latitude(lat_deg: np.ndarray) -> np.ndarray:
    """Convert geodetic WGS84 latitudes to authalic latitudes.

    Mapping latitudes this way sends the ellipsoid onto the authalic sphere with every area
    preserved, so spherical formulas give ellipsoidal areas.

    Parameters
    ----------
    lat_deg : numpy.ndarray
        Geodetic latitudes (degrees), any shape.

    Returns
    -------
    numpy.ndarray
        Authalic latitudes (degrees), same shape.
    """
    e = np.sqrt(WGS84_F * (2 - WGS84_F))
    q_pole = _authalic_q(np.ones(1), e)[0]
    q = _authalic_q(np.sin(np.radians(lat_deg)), e)
    return np.degrees(np.arcsin(np.clip(q / q_pole, -1.0, 1.0)))


def ring_area_km2(lon: np.ndarray, lat: np.ndarray, *, surface: str = "wgs84") -> np.ndarray:
    """Compute the areas of closed rings whose vertices are joined by geodesics (great circles).

    Rings that wind around a pole (e.g. the H3 cell holding the pole) are handled.

    Parameters
    ----------
    lon, lat : numpy.ndarray
        ``(n_rings, n_vertices)`` degrees; a ring may repeat its last vertex as padding
        (zero-length edges add nothing). The closing edge is implied.
    surface : {"wgs84", "sphere"}, default "wgs84"
        ``"wgs84"`` for true areas on the ellipsoid, ``"sphere"`` for the authalic sphere
        (the surface H3 and HEALPix define their cells on).

    Returns
    -------
    numpy.ndarray
        ``(n_rings,)`` areas in km^2.

    Raises
    ------
    ValueError
        If ``surface`` is neither ``"wgs84"`` nor ``"sphere"``.
    """
    lon = np.atleast_2d(np.asarray(lon, dtype=np.float64))
    lat = np.atleast_2d(np.asarray(lat, dtype=np.float64))
    if surface == "wgs84":
        lat = authalic_latitude(lat)
    elif surface != "sphere":
        raise ValueError(f"surface must be 'wgs84' or 'sphere', not {surface!r}")
    lam1 = np.radians(lon)
    lam2 = np.roll(lam1, -1, axis=1)
    t1 = np.tan(np.radians(lat) / 2)
    t2 = np.roll(t1, -1, axis=1)
    dlam = (lam2 - lam1 + np.pi) % (2 * np.pi) - np.pi
    # Signed area between each edge and the equator (spherical excess of the trapezoid).
    excess = 2 * np.arctan2(np.tan(dlam / 2) * (t1 + t2), 1 + t1 * t2)
    total = excess.sum(axis=1)
    winding = np.rint(dlam.sum(axis=1) / (2 * np.pi))
    # A ring around a pole: the trapezoids add up to the complement of the cap it bounds.
    total = np.where(winding != 0, 2 * np.pi * winding * np.sign(lat.mean(axis=1)) - total, total)
    return np.abs(total) * AUTHALIC_RADIUS_KM**2


def _unit_vectors(lon_deg: np.ndarray, lat_deg: np.ndarray) -> np.ndarray:
    lam, phi = np.radians(lon_deg), np.radians(lat_deg)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=-1)


def great_circle_crossing_lat(
    lon1: float, lat1: float, lon2: float, lat2: float, meridian: float
) -> float:
    """Find the latitude where the great circle from point 1 to point 2 crosses ``meridian``.

    Used to cut cells at the antimeridian exactly on their edges instead of on a straight
    line in lon/lat, which near the pole is off by kilometres.

    Parameters
    ----------
    lon1, lat1 : float
        First point (degrees).
    lon2, lat2 : float
        Second point (degrees).
    meridian : float
        Longitude of the meridian (degrees).

    Returns
    -------
    float
        Latitude (degrees) of the crossing on the side of the two points; ``lat1`` if the edge
        runs along the meridian.
    """
    p1, p2 = _unit_vectors(np.array([lon1, lon2]), np.array([lat1, lat2]))
    normal = np.cross(p1, p2)
    lam = np.radians(meridian)
    meridian_normal = np.array([-np.sin(lam), np.cos(lam), 0.0])
    direction = np.cross(normal, meridian_normal)
    norm = np.linalg.norm(direction)
    if norm < 1e-15:  # the edge runs along the meridian itself
        return float(lat1)
    direction /= norm
    if direction @ (p1 + p2) < 0:
        direction = -direction
    return float(np.degrees(np.arcsin(np.clip(direction[2], -1.0, 1.0))))
