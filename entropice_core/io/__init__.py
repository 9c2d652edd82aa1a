"""Reading and writing the project's file formats.

Single files (GeoParquet, GeoTIFF, PNG) are replaced atomically by a rename; Zarr stores are
swapped in by two renames (not atomic for readers, see :mod:`entropice_core.io.zarr`); Icechunk
repositories commit each write as one snapshot.
"""
