"""The uvicorn supervisor of an API, as lean as it can be: `campaigns serve command-api|query-api`
checks the settings and keys, then replaces itself (exec) with this module.

The supervisor only starts, watches and restarts the workers and serves the workers' metrics
from the multiprocess directory; everything the app needs (settings, pydantic, the clients) is
imported by the workers. Exec'ing into a process that never imported those keeps the supervisor
at about half the memory of the launcher that checked them (the idle footprint figure). Its one
argument is the JSON that `launcher.cli.serve` writes; the workers read the settings from the
environment, as before.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any


def main(argv: list[str]) -> int:
    config: dict[str, Any] = json.loads(argv[0])
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    # Metrics on an internal listener of the uvicorn parent (which outlives its workers and reads
    # all their series from the multiprocess directory), not on the public port.
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    try:
        start_http_server(config["metrics_port"], addr=config["metrics_host"], registry=registry)
    except OSError as exc:
        print(
            f"refusing to start {config['service']}: its metrics port {config['metrics_host']}:"
            f"{config['metrics_port']} is taken ({exc.strerror}); set {config['metrics_setting']}",
            file=sys.stderr,
        )
        return 2
    import uvicorn

    if config["workers"] == 1:
        # uvicorn runs the app in this very process: its modules imported first, then settled
        # out of the garbage collector's scans (workers of their own would import them again).
        from service_runtime.event_loop import settle_heap

        importlib.import_module(config["factory"].partition(":")[0])
        settle_heap(config["gc_young_threshold"])
    uvicorn.run(
        config["factory"],
        factory=True,
        host=config["host"],
        port=config["port"],
        workers=config["workers"],
        loop=config["loop"],
        log_level="warning",
        access_log=False,
        lifespan="on",
        ws_max_size=config["ws_max_size"],
        timeout_keep_alive=config["timeout_keep_alive"],
        proxy_headers=config["proxy_headers"],
        forwarded_allow_ips=config["forwarded_allow_ips"],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
