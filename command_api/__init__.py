"""Write side: commands, the write model in MongoDB, and the outbox relay to Kafka."""
