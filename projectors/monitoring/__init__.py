"""The monitor's feed from the pipeline: consumer lag, dead letters and throughput, sampled from Kafka."""
