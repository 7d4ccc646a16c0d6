"""The Space's own modules, one concern each; ``space/app.py`` is the page layout that wires them together.

* `settings`: limits, instructions, colours, the cache folder, `InputError`;
* `models`: the model, loaded once per process through ``vlm2geovec.load_model``;
* `uploads`: size and pixel checks, images read with the processor's own reader;
* `gallery`: the geo-tagged gallery of real tiles (``vlm2geovec.data.assets``) and the `Collection` it shares
  with indexed rasters (a ``vlm2geovec.index.VectorIndex`` underneath);
* `rasters`: the analyst's own raster tiled by ``vlm2geovec.geotiff.GeoTiffTiler``, embedded, cached by content;
* `places`: GeoNames place lookup;
* `maps`: the static (matplotlib) and Leaflet maps, with tile footprints;
* `analysis`: relevance feedback, the few-shot map, change between two dates, GeoJSON/GeoParquet export
  (plain functions on vectors: the UI only calls them);
* `state`: `SpaceState`, the demos' logic over one model;
* `guards`: gradio payload checks that name the field instead of a traceback.
"""
