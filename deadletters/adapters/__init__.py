"""Kafka and MongoDB behind the dead-letter ports."""
