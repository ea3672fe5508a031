"""offerlift.models: trained models as data, shared by training (writes) and serving (reads).

The scorer spec and its LightGBM runtime (`scoring`), compiled trees (`compiled`), the model files and their loading
(`model_io`), the MLflow pyfunc model logged as code (`pyfunc_model`, with a copy of `scoring` so that it loads
without offerlift; `pyfunc` for models pickled by older versions) and the registry settings (`registry`). Imports
`offerlift.features` only; MLflow is imported inside the functions that need it (and by `pyfunc`), never by
importing the others.
"""
