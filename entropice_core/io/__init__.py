"""Reading and writing the project's file formats.

Single files (GeoParquet, GeoTIFF, PNG) are replaced atomically by a rename; Zarr stores and
outputs of several files are published as versions behind one atomic pointer (see
:mod:`entropice_core.io.atomic`); Icechunk repositories commit each write as one snapshot.
"""
