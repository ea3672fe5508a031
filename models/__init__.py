"""offerlift.models: trained models as data, shared by training (writes) and serving (reads).

The scorer spec and its LightGBM runtime (`scoring`), compiled trees (`compiled`), the model files and their loading
(`model_io`), the MLflow pyfunc class (`pyfunc`) and the registry settings (`registry`). Imports `offerlift.features`
only; MLflow is imported inside the functions that need it (and by `pyfunc`), never by importing the others.
"""
