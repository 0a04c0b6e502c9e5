"""The workers' ports to the world: SMTP, Redis (send records, reports, status), MongoDB, Kafka DLQ."""
