"""Grids, land/water masks and raster-to-cell aggregation."""
