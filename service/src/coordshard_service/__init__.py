"""coordshard_service: the worker that consumes its shards' commands from JetStream."""
