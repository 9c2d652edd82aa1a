"""The embedded sample region, written in the real sources' formats.

``generate_sample_region(data_dir, seed)`` draws one latent world (terrain, lakes, sea, ground
ice) and writes ArcticDEM-like COG tiles, ERA5-like CDS NetCDF months and DARTS-like RTS
footprints from it under ``<data_dir>/sources/``. See ``docs/sample-region.md``.
"""

from entropice_core.sample.generate import (
    SampleRegionFiles,
    generate_sample_region,
    region_bbox,
    sample_region_files,
)

__all__ = ["SampleRegionFiles", "generate_sample_region", "region_bbox", "sample_region_files"]
