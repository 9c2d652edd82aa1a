"""Terrain analysis of DEMs: derivatives computed tile by tile."""
