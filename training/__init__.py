"""offerlift.training: fit, tune, evaluate and register uplift models.

Imports `offerlift.features` and `offerlift.models`; never `offerlift.serving` (the registry is the only handoff).
"""
