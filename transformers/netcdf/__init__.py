"""The netcdf transformer family: subset, regrid and reformat gridded NetCDF (xarray, rioxarray).

`grids` reads a dataset's axes and CRS, `subset` selects variables and index ranges, `regrid`
warps onto another CRS or grid, `writers` writes NetCDF4, Zarr (zipped) or a COG, `process` runs
one granule's work and `service` is the gRPC face.
"""
