"""The write side's connections to MongoDB, Kafka, Redis and argon2."""
