"""offerlift: ML decisioning for coupon and offer marketing.

The subpackages live in the repository's top-level folders, mapped into this namespace: `offerlift.features`
(features/), `offerlift.models` (models/), `offerlift.simworld` (simworld/), `offerlift.training` (training/) and
`offerlift.serving` (serving/). This folder holds what ties them together for users: the `offerlift` command
(`cli`, its feedback-loop commands `cli_feedback`, what it shows and logs `console`), the Python API (`api`) and
what it re-exports (`datasets`, `modeling`, `score`, `analysis`, `plots`, `campaigns`), the command-line automation
(`automation`), the closed loop on the simulated world (`loop`) with the floors and ceilings it is measured against
(`references`), and the feedback loop on the service's own decision log: outcomes, the join and the A/B report
(`feedback`), the logged decisions as data (`logged_data`), off-policy evaluation and retraining (`lifecycle`) and
moving the champion (`promotion`).
"""
