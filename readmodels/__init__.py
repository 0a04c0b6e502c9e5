"""The read-model contract every part shares: the Redis keyspace, the documents and their fold,
generations, the processes' status format, consumer-group names and the Lua scripts."""
