"""offerlift.features: the data side. Tables, catalog, data sets, features and the customer attributes rules read.

- the canonical tables and their checks (`schema`, `tables`), the one exception tree (`errors`) and an experiment's
  tables with its features (`experiment`);
- the catalog of offers, channels and arms (`catalog`) and which arms can reach a customer (`eligibility`);
- the data sets: Hillstrom (`hillstrom`), Starbucks (`starbucks`), your own file (`byo`), found by `locate`;
- point-in-time features (`build`: one builder for training and serving) and the online feature store (`store`);
- customer attributes from events: segments and tags (`segments`), coupon-abuse features, identity rules and the
  risk mask (`abuse`; the behaviour model is trained in `offerlift.training.abuse_model`);
- data checks and joins: covariate balance of an experiment (`balance`), outcome events from a
  file (`outcome_file`), outcomes joined to decisions (`attribution`).

This package imports nothing else of the project; every other package builds on it.
"""
