"""Replay tools: rebuild a projection from the event log beside the live one, verify it, time-travel."""
