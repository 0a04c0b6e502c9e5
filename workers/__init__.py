"""The seed's job queue as Kafka consumers: welcome e-mails and campaign reports, with retries and a DLQ."""
