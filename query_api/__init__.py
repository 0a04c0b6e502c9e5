"""Read side: the query API over the Redis read models, and the live monitor."""
