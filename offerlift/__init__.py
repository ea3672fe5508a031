"""offerlift: the Python API and command-line tool on top of `features`, `training` and `serving`."""
