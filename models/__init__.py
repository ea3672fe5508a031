"""offerlift.models: trained models as data, shared by training (writes) and serving (reads).

The scorer spec and its LightGBM runtime (`scoring`), compiled trees (`compiled`), the MLflow model files
(`model_io`) and the registry settings (`registry`). Imports `offerlift.features` only; MLflow is imported inside
the functions that need it, never at module import time.
"""
