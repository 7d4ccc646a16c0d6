"""The data layer shared by the package, the RSMEB benchmark, the Space and ``bench/``; none of them owns it.

* `vlm2geovec.data.assets`: real imagery and geography from pinned PyPI archives (Sentinel-2, Landsat and NEON
  rasters and tiles, the GeoNames gazetteer, Natural Earth countries, UTM projections); the vendored Natural
  Earth file and its build recipe live in this folder.
* `vlm2geovec.data.items`: the stored item layout (``image``, ``text``, ``bbox``, ``lat``, ``lon`` columns).
* `vlm2geovec.data.io`: `atomic_write`.

Submodules are imported on demand (``from vlm2geovec.data import assets``): none is loaded by this file.
"""
