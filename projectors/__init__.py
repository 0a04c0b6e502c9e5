"""Kafka consumers: the projections into Redis, the workers, and the replay tools."""
