"""offerlift.simworld: the simulated world, the one data source with ground truth.

A seeded population with hidden traits (`population`), the exact expected outcome of every customer under every
arm (`truth`), outcomes and events played forward (`play`), randomized experiments drawn from it (`experiment`),
the world's settings (`config`, presets next to this file), simulated customer files for batch decisions
(`customers`) and the world's exact calibration values: oracle, best single arm, feature ceiling (`calibration`).
The world itself, `SimWorld`, ties them together (`world`). Imports `offerlift.features` only.
"""
