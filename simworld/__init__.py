"""offerlift.simworld: the simulated world, the one data source with ground truth.

A seeded population with hidden traits (`population`), the exact expected outcome of every customer under every
arm (`truth`), outcomes and events played forward (`play`), randomized experiments drawn from it (`experiment`),
and the world's settings (`config`, presets next to this file). `world.SimWorld` ties them together.
Imports `offerlift.features` only.
"""
