"""Use cases of the projectors: consume a batch of records into a projection."""
