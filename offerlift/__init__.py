"""offerlift: ML decisioning for coupon and offer marketing.

The subpackages live in the repository's top-level folders, mapped into this namespace: `offerlift.features`
(features/), `offerlift.models` (models/), `offerlift.simworld` (simworld/), `offerlift.training` (training/) and
`offerlift.serving` (serving/). This folder holds the Python API (`offerlift.api`), the loop and the `offerlift`
command.
"""
