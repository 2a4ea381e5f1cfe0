"""MLflow: tracking conventions, registering a validated model, registered-model lookups, and a
version's lineage back to its data and code."""
