"""offerlift.features: schema, catalog, data loaders and point-in-time feature builders.

This package imports nothing else of the project; `training/` and `serving/` build on it.
"""
