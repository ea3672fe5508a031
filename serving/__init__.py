"""offerlift.serving: decide. The pure decision policy, its rules, the decision log, the BentoML service and batch.

Imports `offerlift.features` and `offerlift.models` (the champion comes from the registry); never
`offerlift.training`.
"""
