"""Which processes `campaigns run` starts: one per service, or several of a scaled-out service.

The relay, the projectors and the workers may run as several instances (`relay_instances`,
`projectors_instances`, `workers_instances`; 2 each in the cluster topology): the relays share a
lease (one publishes, the other waits), the projectors and workers share their consumer groups
(Kafka splits the partitions between them). Each instance has its own name (`relay-2`), pid file,
log and metrics port (the service's port + (n - 1) * `metrics_port_instance_step`). A service
with one instance keeps its plain name (`relay`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service_runtime.settings import Settings

# service: (instance count setting, metrics port setting)
SCALED: dict[str, tuple[str, str]] = {
    "relay": ("relay_instances", "relay_metrics_port"),
    "projectors": ("projectors_instances", "projectors_metrics_port"),
    "workers": ("workers_instances", "workers_metrics_port"),
}


@dataclass(frozen=True)
class Instance:
    """One process to run: `service` is what `campaigns serve` runs, `env` what sets it apart."""

    name: str
    service: str
    number: int = 1
    metrics_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, object]:
        """What `campaigns stack status --json` shows beside the pid."""
        return {"service": self.service, "instance": self.number, "metrics_port": self.metrics_port}


def instance_count(settings: Settings, service: str) -> int:
    count_key, _ = SCALED.get(service, ("", ""))
    return int(getattr(settings, count_key)) if count_key else 1


def plan_instances(settings: Settings, services: list[str]) -> list[Instance]:
    """Every process to start, in the order of `services`."""
    planned: list[Instance] = []
    for service in services:
        if service not in SCALED:
            planned.append(Instance(service, service))
            continue
        _, port_key = SCALED[service]
        count = instance_count(settings, service)
        base = int(getattr(settings, port_key))
        for number in range(1, count + 1):
            port = base + (number - 1) * settings.metrics_port_instance_step
            planned.append(
                Instance(
                    name=service if count == 1 else f"{service}-{number}",
                    service=service,
                    number=number,
                    metrics_port=port,
                    env={f"CAMPAIGNS_{port_key.upper()}": str(port)},
                )
            )
    return planned
