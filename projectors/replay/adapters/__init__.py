"""Where replay reads events (MongoDB log, Kafka topics) and writes generations (Redis)."""
