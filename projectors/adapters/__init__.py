"""Redis (read models, Lua scripts, status) and Kafka (dead letters) for the projectors."""
