"""Dead-letter operations: list, show, re-drive and purge the records on `<topic>.dlq`."""
