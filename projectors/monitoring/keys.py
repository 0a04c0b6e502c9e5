"""Redis names of the monitor's feed (the read models' own keys are in `projectors.adapters.keys`)."""

from __future__ import annotations


def monitor_channel(prefix: str) -> str:
    """Pub/sub channel: `{"type": "lag"|"throughput", ...}` samples, beside the events channel."""
    return f"{prefix}:monitor"


def lag_sample_key(prefix: str) -> str:
    """String: the latest lag sample (JSON), what GET /monitor/state shows."""
    return f"{prefix}:monitor:lag"


def throughput_history_key(prefix: str) -> str:
    """List: throughput samples (JSON), newest first, trimmed to the chart's window."""
    return f"{prefix}:monitor:throughput"


def sampler_slot_key(prefix: str) -> str:
    """String with a TTL: the projectors instance that samples this interval (one sample per interval)."""
    return f"{prefix}:monitor:sampler"


def relay_status_key(prefix: str) -> str:
    """String: the publishing relay's status (JSON, expires). Written by the command side's relay
    (`command_api.adapters.outbox_relay.relay_status_key`); named here too because the query side
    must not import the command side (a test keeps both names equal)."""
    return f"{prefix}:status:relay"


def worker_status_key(prefix: str, worker: str) -> str:
    """String: one worker's heartbeat (JSON, expires), as `RedisStatusBoard.key` writes it."""
    return f"{prefix}:status:worker:{worker}"


def scheduler_status_key(prefix: str) -> str:
    """Hash: each running scheduler's status (JSON, field = instance). Written by the command
    side's scheduler (`command_api.adapters.scheduler_status.scheduler_status_key`); named here
    too because the query side must not import the command side (a test keeps both names equal)."""
    return f"{prefix}:status:scheduler"
