"""The local stack: real Redis, Apache Kafka (KRaft), MongoDB or SecantusDB and an SMTP sink.

Run as `python infra/local/stack.py up|down|status [--json]` (the `campaigns stack` command and
the Makefile call it). Servers listen on loopback; data, logs and pid files live under `.local/`.
`up` starts only what is not running, waits until each server answers and prints where it
listens; if one fails, it stops the ones it started and names the failed one. `down` stops
exactly the processes recorded in pid files, and finishes even if its output pipe is gone.

CAMPAIGNS_TOPOLOGY picks the servers: `single` (one of each, the default) or `cluster` (a Redis
Cluster of 3 primaries and 3 replicas, 3 Kafka KRaft nodes; MongoDB stays one node). Each
server's recipe is a module of `infra/local/recipes/`; process control is
`service_runtime/processes.py`, shared with the service supervisor.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from infra.local.recipes import kafka_server, mongo_server, redis_server, smtp_server  # noqa: E402
from infra.local.recipes.base import Context, Group, Server, StackError, say  # noqa: E402
from service_runtime import processes  # noqa: E402
from service_runtime.settings import Settings  # noqa: E402

KINDS = ("redis", "kafka", "mongo", "smtp")
MIB = 1024 * 1024


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = (REPO / settings.local_dir).resolve()
        self.run_dir = self.root / "run"
        self.log_dir = self.root / "logs"
        ctx = Context(settings, self.root)
        cluster = settings.topology == "cluster"
        self.groups: list[Group] = [
            redis_server.cluster(ctx) if cluster else redis_server.single(ctx),
            kafka_server.cluster(ctx) if cluster else kafka_server.single(ctx),
            mongo_server.single(ctx),
            smtp_server.single(ctx),
        ]
        self.servers = [server for group in self.groups for server in group.servers]

    # ------------------------------------------------------------------ lifecycle

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def running_pid(self, name: str) -> int | None:
        return processes.read_pid(self.pid_file(name))

    def log(self, server: Server) -> Path:
        return self.log_dir / f"{server.name}.log"

    def up(self, only: list[str] | None = None) -> None:
        """Start what is not running, group by group; on any failure (Ctrl-C included) stop
        what this call started, newest first, and name the server that failed."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        started: list[Server] = []
        current = "the stack"
        try:
            for group in self.groups:
                members = [s for s in group.servers if not only or s.name in only or s.kind in only]
                if not members:
                    continue
                current = group.kind
                fresh = self._start_group(members, started)
                if fresh:
                    current = f"{group.kind} (after start)"
                    group.after_start()
                for server in fresh:
                    say(f"{server.name:6} started (pid {self.running_pid(server.name)}) at {server.where}")
        except BaseException as exc:
            with processes.shutdown_shield():
                reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                if isinstance(exc, StackError):
                    say(f"error: {exc}")
                    exc.reported = True
                else:
                    say(f"{current} {reason}: {type(exc).__name__}: {exc}")
                for server in reversed(started):
                    say(f"{server.name:6} stopping (started by this run, before {current} {reason})")
                    self.stop(server.name)
            raise

    def _start_group(self, members: list[Server], started: list[Server]) -> list[Server]:
        """Spawn every member not running, then wait for all of them (a Kafka cluster's nodes
        only answer once a quorum of them runs). Returns the members this call started."""
        fresh: list[Server] = []
        for server in members:
            pid = self.running_pid(server.name)
            if pid is not None:
                if not processes.wait_until(self._answers(server), pid=pid, timeout=server.timeout):
                    raise StackError(
                        f"{server.name} (pid {pid}) is running but not answering; see {self.log(server)}"
                    )
                say(f"{server.name:6} already running (pid {pid}) at {server.where}")
                continue
            if processes.port_open(server.host, server.port):
                raise StackError(
                    f"port {server.host}:{server.port} for {server.name} is taken by a process this "
                    f"stack did not start. Stop it, or choose another port (see README, 'Ports')."
                )
            server.prepare()
            process = processes.spawn(server.command(), cwd=REPO, log=self.log(server), env=server.env)
            processes.write_pid(self.pid_file(server.name), process.pid)
            started.append(server)
            fresh.append(server)
        for server in fresh:
            pid = self.running_pid(server.name)
            if not processes.wait_until(self._answers(server), pid=pid, timeout=server.timeout):
                tail = "\n".join(self.log(server).read_text(errors="replace").splitlines()[-15:])
                state = "exited" if pid is None else f"did not become ready in {server.timeout:.0f}s"
                raise StackError(f"{server.name} {state}; log tail ({self.log(server)}):\n{tail}")
        return fresh

    @staticmethod
    def _answers(server: Server) -> Any:
        def check() -> bool:
            return processes.port_open(server.host, server.port) and (server.ready is None or server.ready())

        return check

    def stop(self, name: str, timeout: float = 30.0) -> bool:
        pid = self.running_pid(name)
        self.pid_file(name).unlink(missing_ok=True)
        if pid is None:
            return False
        processes.terminate(pid, timeout)
        return True

    def down(self) -> None:
        """Stop every server of this topology, then any other server a pid file names (one
        started under the other topology), all at once; Ctrl-C or a closed pipe cannot stop it."""
        with processes.shutdown_shield():
            names = [server.name for server in reversed(self.servers)]
            others = sorted(p.stem for p in self.run_dir.glob("*.pid") if p.stem not in names)
            pids = {name: self.running_pid(name) for name in [*names, *others]}
            processes.terminate_all([pid for pid in pids.values() if pid is not None])
            for name, pid in pids.items():
                self.pid_file(name).unlink(missing_ok=True)
                if pid is not None:
                    say(f"{name:6} stopped")
                elif name in names:
                    say(f"{name:6} was not running")

    # ------------------------------------------------------------------ status

    def state(self, server: Server) -> tuple[str, int | None]:
        pid = self.running_pid(server.name)
        listening = processes.port_open(server.host, server.port)
        if pid is not None and listening:
            return "up", pid
        if pid is not None:
            return "starting", pid
        return ("taken" if listening else "down"), None

    def status(self) -> int:
        down = 0
        for server in self.servers:
            state, pid = self.state(server)
            if state == "up":
                say(f"{server.name:6} up   (pid {pid}) at {server.where}")
                continue
            down += 1
            if state == "starting":
                say(f"{server.name:6} starting or stuck (pid {pid}), port {server.port} closed")
            else:
                other = " (port taken by another process)" if state == "taken" else ""
                say(f"{server.name:6} down{other}")
        for service in self.services_running():
            port = f", metrics :{service['metrics_port']}" if service.get("metrics_port") else ""
            say(f"{service['name']:6} {service['state']:4} (pid {service['pid']}{port})")
        return 1 if down else 0

    def services_running(self) -> list[dict[str, Any]]:
        """Every service instance `campaigns run` recorded: name, pid, and which service and
        instance it is with its metrics port (the JSON file beside its pid file)."""
        found = []
        for pid_file in sorted((self.run_dir / "services").glob("*.pid")):
            pid = processes.read_pid(pid_file)
            entry: dict[str, Any] = {"name": pid_file.stem, "pid": pid, "state": "up" if pid else "down"}
            try:
                entry.update(json.loads(pid_file.with_suffix(".json").read_text()))
            except (OSError, ValueError):
                entry.update({"service": pid_file.stem, "instance": 1})
            found.append(entry)
        return found

    def status_document(self) -> dict[str, Any]:
        """What `status --json` prints (its shape is documented in the README, 'Topologies')."""
        servers = []
        for server in self.servers:
            state, pid = self.state(server)
            entry: dict[str, Any] = {
                "name": server.name,
                "kind": server.kind,
                "address": f"{server.host}:{server.port}",
                "url": server.where.split(" ")[0],
                "pid": pid,
                "state": state,
            }
            entry.update(server.describe() if state == "up" else {})
            servers.append(entry)
        services = self.services_running()
        for entry in [*servers, *services]:
            entry["rss_mib"] = round(processes.resident_bytes(entry["pid"]) / MIB, 1) if entry["pid"] else 0.0
        settings = self.settings
        return {
            "topology": settings.topology,
            "ok": all(s["state"] == "up" for s in servers),
            "local_dir": str(self.root),
            # Resident memory of every server and service (process trees: an API's workers count)
            "rss_mib": {
                "servers": round(sum(s["rss_mib"] for s in servers), 1),
                "services": round(sum(s["rss_mib"] for s in services), 1),
                "total": round(sum(s["rss_mib"] for s in [*servers, *services]), 1),
            },
            "clients": {
                "redis_url": settings.redis_url if not settings.redis_cluster_nodes else None,
                "redis_cluster_nodes": [n for n in settings.redis_cluster_nodes.split(",") if n],
                "kafka_bootstrap": settings.kafka_bootstrap.split(","),
                "kafka_replication_factor": settings.kafka_replication_factor,
                "kafka_min_insync_replicas": settings.kafka_min_insync_replicas,
                "mongo_url": settings.mongo_url,
                "smtp": f"{settings.smtp_host}:{settings.smtp_port}",
            },
            "servers": servers,
            "services": services,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "servers", nargs="*", help="only these: a kind (redis, kafka, mongo, smtp) or a name (kafka-2)"
    )
    parser.add_argument("--json", action="store_true", help="status as one JSON document")
    args = parser.parse_args(argv)
    try:
        stack = Stack(Settings())
        if args.action == "up":
            stack.up(args.servers or None)
            return 0
        if args.action == "down":
            stack.down()
            return 0
        if args.json:
            document = stack.status_document()
            processes.say(json.dumps(document, indent=2))
            return 0 if document["ok"] else 1
        return stack.status()
    except StackError as exc:
        if not exc.reported:
            say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
