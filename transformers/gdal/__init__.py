"""The gdal transformer: variable and bbox subsets of gridded granules with rasterio (GDAL).

`subset` does the raster work without gRPC; `service` serves it as the Transformer API.
"""
