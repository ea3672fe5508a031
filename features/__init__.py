"""offerlift.features: schema, catalog, data loaders, point-in-time feature builders and the online feature store.

This package imports nothing else of the project; every other package builds on it.
"""
