"""The local stack: real Redis, Apache Kafka (KRaft), MongoDB or SecantusDB and an SMTP sink.

Run as `python infra/local/stack.py up|down|status` (the `campaigns stack` command and the
Makefile call it). Servers listen on loopback; data, logs and pid files live under `.local/`.
`up` starts only what is not running, waits until each server answers and prints where it
listens; `down` stops exactly the processes recorded in pid files.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from service_runtime.settings import Settings  # noqa: E402

KAFKA_POM = REPO / "infra" / "kafka" / "pom.xml"
KAFKA_LOG4J = REPO / "infra" / "kafka" / "log4j2.properties"
SECANTUS_VERSION = "0.7.0b3"
CACHE = Path(os.environ.get("CAMPAIGNS_CACHE_DIR", Path.home() / ".cache" / "campaigns-cqrs"))
# Installed tools (SecantusDB's venv) are shared by every stack of this checkout, whatever its
# CAMPAIGNS_LOCAL_DIR, so a second stack (the fault tests' private one) installs nothing again.
TOOLS = Path(os.environ.get("CAMPAIGNS_TOOLS_DIR", REPO / ".local" / "tools"))


class StackError(RuntimeError):
    """A server could not be started; the message says why and what to do."""


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not reaped) is not alive.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@dataclass
class Server:
    name: str
    host: str
    port: int
    command: Callable[[], list[str]]
    prepare: Callable[[], None] = lambda: None
    ready: Callable[[], bool] | None = None
    after_start: Callable[[], None] = lambda: None
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 90.0
    where: str = ""


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = (REPO / settings.local_dir).resolve()
        self.run_dir = self.root / "run"
        self.log_dir = self.root / "logs"
        kafka = urlparse(f"kafka://{settings.kafka_bootstrap.split(',')[0]}")
        redis = urlparse(settings.redis_url)
        mongo = urlparse(settings.mongo_url)
        self.kafka_host, self.kafka_port = kafka.hostname or "127.0.0.1", kafka.port or 9092
        self.redis_host, self.redis_port = redis.hostname or "127.0.0.1", redis.port or 6379
        self.mongo_host, self.mongo_port = mongo.hostname or "127.0.0.1", mongo.port or 27017
        self.kafka_controller_port = int(os.environ.get("CAMPAIGNS_KAFKA_CONTROLLER_PORT", "9093"))
        self.mongod = shutil.which("mongod")
        self.servers = [self._redis(), self._kafka(), self._mongo(), self._smtp()]

    # ------------------------------------------------------------------ servers

    def _redis(self) -> Server:
        data = self.root / "redis"

        def prepare() -> None:
            ensure_debian_package("redis-server", "redis-server")
            data.mkdir(parents=True, exist_ok=True)

        return Server(
            name="redis",
            host=self.redis_host,
            port=self.redis_port,
            prepare=prepare,
            command=lambda: [
                shutil.which("redis-server") or "redis-server",
                "--bind",
                self.redis_host,
                "--port",
                str(self.redis_port),
                "--dir",
                str(data),
                "--save",
                "60 1000",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
            ],
            ready=lambda: redis_ping(self.redis_host, self.redis_port),
            where=f"redis://{self.redis_host}:{self.redis_port}",
        )

    def _kafka(self) -> Server:
        data = self.root / "kafka"
        config = self.root / "kafka.properties"
        libs = kafka_libs_dir()

        def prepare() -> None:
            if not shutil.which("java"):
                raise StackError(
                    "Kafka needs Java 17+ on PATH (Debian: apt-get install openjdk-17-jre-headless)"
                )
            resolve_kafka_jars(libs)
            data.mkdir(parents=True, exist_ok=True)
            config.write_text(
                "\n".join(
                    [
                        "process.roles=broker,controller",
                        "node.id=1",
                        f"controller.quorum.voters=1@{self.kafka_host}:{self.kafka_controller_port}",
                        f"listeners=PLAINTEXT://{self.kafka_host}:{self.kafka_port},"
                        f"CONTROLLER://{self.kafka_host}:{self.kafka_controller_port}",
                        f"advertised.listeners=PLAINTEXT://{self.kafka_host}:{self.kafka_port}",
                        "controller.listener.names=CONTROLLER",
                        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                        "inter.broker.listener.name=PLAINTEXT",
                        f"log.dirs={data}",
                        f"num.partitions={self.settings.kafka_partitions}",
                        "auto.create.topics.enable=true",
                        "offsets.topic.replication.factor=1",
                        "offsets.topic.num.partitions=6",
                        "transaction.state.log.replication.factor=1",
                        "transaction.state.log.min.isr=1",
                        "share.coordinator.state.topic.replication.factor=1",
                        "share.coordinator.state.topic.min.isr=1",
                        "group.initial.rebalance.delay.ms=0",
                        "log.retention.hours=-1",
                        "",
                    ]
                )
            )
            if not (data / "meta.properties").exists():
                cluster_id = uuid.uuid4().hex[:22]
                run_checked(
                    [
                        "java",
                        "-cp",
                        f"{libs}/*",
                        "kafka.tools.StorageTool",
                        "format",
                        "-t",
                        cluster_id,
                        "-c",
                        str(config),
                    ],
                    "formatting Kafka's KRaft storage",
                )

        return Server(
            name="kafka",
            host=self.kafka_host,
            port=self.kafka_port,
            prepare=prepare,
            command=lambda: [
                "java",
                "-Xms256m",
                "-Xmx768m",
                "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
                "-Djava.awt.headless=true",
                "-cp",
                f"{libs}/*",
                "kafka.Kafka",
                str(config),
            ],
            ready=lambda: kafka_ready(self.settings),
            after_start=lambda: create_topics(self.settings),
            timeout=120.0,
            where=f"kafka://{self.kafka_host}:{self.kafka_port} (Apache Kafka {kafka_version()}, KRaft)",
        )

    def _mongo(self) -> Server:
        data = self.root / "mongo"
        if self.mongod:
            return Server(
                name="mongo",
                host=self.mongo_host,
                port=self.mongo_port,
                prepare=lambda: data.mkdir(parents=True, exist_ok=True),
                command=lambda: [
                    self.mongod or "mongod",
                    "--replSet",
                    "rs0",
                    "--bind_ip",
                    self.mongo_host,
                    "--port",
                    str(self.mongo_port),
                    "--dbpath",
                    str(data),
                    "--quiet",
                ],
                ready=lambda: mongo_ready(self.settings.mongo_url),
                after_start=lambda: mongo_initiate_replica_set(self.mongo_host, self.mongo_port),
                where=f"mongodb://{self.mongo_host}:{self.mongo_port} (mongod, replica set rs0)",
            )
        venv = TOOLS / "secantus"

        def prepare() -> None:
            data.mkdir(parents=True, exist_ok=True)
            python = venv / "bin" / "python"
            probe = (
                subprocess.run([str(python), "-c", "import secantus"], capture_output=True, check=False)
                if python.exists()
                else None
            )
            if probe is None or probe.returncode != 0:
                say(f"installing SecantusDB {SECANTUS_VERSION} into {venv} (a separate venv)")
                run_checked([sys.executable, "-m", "venv", str(venv)], "creating SecantusDB's venv")
                run_checked(
                    [str(python), "-m", "pip", "install", "-q", f"secantusdb=={SECANTUS_VERSION}"],
                    "installing SecantusDB from PyPI",
                )

        return Server(
            name="mongo",
            host=self.mongo_host,
            port=self.mongo_port,
            prepare=prepare,
            command=lambda: [
                str(venv / "bin" / "python"),
                "-m",
                "secantus",
                "--host",
                self.mongo_host,
                "--port",
                str(self.mongo_port),
                "--storage-path",
                str(data),
                "--log-level",
                "WARNING",
                # Without it a commit returns before its journal record reaches the OS: a
                # SIGKILL then loses the last acknowledged transactions (accepted commands).
                "--sync-on-commit",
            ],
            ready=lambda: mongo_ready(self.settings.mongo_url),
            where=f"mongodb://{self.mongo_host}:{self.mongo_port} (SecantusDB {SECANTUS_VERSION})",
        )

    def _smtp(self) -> Server:
        maildir = self.root / "smtp"
        return Server(
            name="smtp",
            host=self.settings.smtp_host,
            port=self.settings.smtp_port,
            prepare=lambda: maildir.mkdir(parents=True, exist_ok=True),
            command=lambda: [
                sys.executable,
                str(REPO / "infra" / "local" / "smtp_sink.py"),
                "--host",
                self.settings.smtp_host,
                "--port",
                str(self.settings.smtp_port),
                "--maildir",
                str(maildir),
            ],
            where=f"smtp://{self.settings.smtp_host}:{self.settings.smtp_port} (sink, mail in {maildir})",
        )

    # ------------------------------------------------------------------ lifecycle

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def running_pid(self, name: str) -> int | None:
        path = self.pid_file(name)
        if not path.exists():
            return None
        try:
            pid = int(path.read_text().strip())
        except ValueError:
            return None
        return pid if pid_alive(pid) else None

    def up(self, only: list[str] | None = None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for server in self.servers:
            if only and server.name not in only:
                continue
            self.start(server)

    def start(self, server: Server) -> None:
        pid = self.running_pid(server.name)
        if pid is not None:
            if self._wait_ready(server, pid, timeout=server.timeout):
                say(f"{server.name:6} already running (pid {pid}) at {server.where}")
                return
            raise StackError(
                f"{server.name} (pid {pid}) is running but not answering; see {self.log(server)}"
            )
        if port_open(server.host, server.port):
            raise StackError(
                f"port {server.host}:{server.port} for {server.name} is taken by a process this stack "
                f"did not start. Stop it, or choose another port (see README, 'Ports')."
            )
        server.prepare()
        log = self.log(server)
        with log.open("ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {server.name}\n".encode())
            process = subprocess.Popen(
                server.command(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
                env={**os.environ, **server.env},
                start_new_session=True,
            )
        self.pid_file(server.name).write_text(str(process.pid))
        if not self._wait_ready(server, process.pid, timeout=server.timeout):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            self.stop(server.name)
            raise StackError(
                f"{server.name} did not become ready in {server.timeout:.0f}s; log tail:\n{tail}"
            )
        server.after_start()
        say(f"{server.name:6} started (pid {process.pid}) at {server.where}")

    def _wait_ready(self, server: Server, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return False
            if port_open(server.host, server.port) and (server.ready is None or server.ready()):
                return True
            time.sleep(0.3)
        return False

    def log(self, server: Server) -> Path:
        return self.log_dir / f"{server.name}.log"

    def stop(self, name: str, timeout: float = 30.0) -> bool:
        pid = self.running_pid(name)
        self.pid_file(name).unlink(missing_ok=True)
        if pid is None:
            return False
        stop_process_group(pid, timeout)
        return True

    def down(self) -> None:
        for server in reversed(self.servers):
            if self.stop(server.name):
                say(f"{server.name:6} stopped")
            else:
                say(f"{server.name:6} was not running")

    def status(self) -> int:
        down = 0
        for server in self.servers:
            pid = self.running_pid(server.name)
            if pid is not None and port_open(server.host, server.port):
                say(f"{server.name:6} up   (pid {pid}) at {server.where}")
            elif pid is not None:
                say(f"{server.name:6} starting or stuck (pid {pid}), port {server.port} closed")
                down += 1
            else:
                other = " (port taken by another process)" if port_open(server.host, server.port) else ""
                say(f"{server.name:6} down{other}")
                down += 1
        return 1 if down else 0


def stop_process_group(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL what is left after `timeout`."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------- installs


def run_checked(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(
            f"{what} failed (exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def ensure_debian_package(binary: str, package: str) -> None:
    if shutil.which(binary):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise StackError(f"{binary} is missing: install Debian's '{package}' (apt-get install {package})")
    say(f"installing Debian's {package} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, capture_output=True)
    result = subprocess.run(
        ["apt-get", "install", "-y", "-qq", package], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not shutil.which(binary):
        raise StackError(f"apt-get install {package} failed:\n{result.stderr[-2000:]}")


def kafka_version() -> str:
    text = KAFKA_POM.read_text()
    start = text.index("<kafka.version>") + len("<kafka.version>")
    return text[start : text.index("</kafka.version>")]


def kafka_libs_dir() -> Path:
    return CACHE / f"kafka-{kafka_version()}" / "libs"


def resolve_kafka_jars(libs: Path) -> None:
    """Let Maven resolve the pinned broker's jars from Maven Central into a cache outside the repo."""
    marker = libs / ".complete"
    if marker.exists():
        return
    if not shutil.which("mvn"):
        raise StackError(
            "Kafka's jars come from Maven Central through Maven: install Maven (apt-get install maven)"
        )
    say(f"resolving Apache Kafka {kafka_version()} jars from Maven Central into {libs}")
    libs.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            "mvn",
            "-B",
            "-q",
            "-f",
            str(KAFKA_POM),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={libs}",
            "-DincludeScope=runtime",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise StackError(
            "Maven could not resolve Kafka's jars from Maven Central (is it reachable?). "
            "No other broker is substituted.\n" + (result.stdout + result.stderr)[-3000:]
        )
    marker.write_text(kafka_version())


# ---------------------------------------------------------------------- health checks


def redis_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def mongo_ready(url: str) -> bool:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    try:
        with MongoClient(url, serverSelectionTimeoutMS=1000) as client:
            hello = client.admin.command("hello")
            return bool(hello.get("isWritablePrimary") or hello.get("ismaster"))
    except PyMongoError:
        return False


def mongo_initiate_replica_set(host: str, port: int) -> None:
    from pymongo import MongoClient
    from pymongo.errors import OperationFailure

    with MongoClient(host, port, directConnection=True) as client:
        try:
            client.admin.command(
                "replSetInitiate", {"_id": "rs0", "members": [{"_id": 0, "host": f"{host}:{port}"}]}
            )
        except OperationFailure as exc:
            if "already initialized" not in str(exc):
                raise
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if client.admin.command("hello").get("isWritablePrimary"):
                return
            time.sleep(0.3)
    raise StackError("mongod did not become replica-set primary in 30s")


def kafka_ready(settings: Settings) -> bool:
    async def check() -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            await admin.close()

    return asyncio.run(check())


def create_topics(settings: Settings, prefix: str | None = None) -> None:
    """Create every topic of the system with the configured partition count (idempotent)."""
    from events.topics import Topics

    async def create() -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            topics = Topics(settings.topic_prefix if prefix is None else prefix).all()
            missing = [
                NewTopic(name, num_partitions=settings.kafka_partitions, replication_factor=1)
                for name in topics
                if name not in existing
            ]
            if missing:
                await admin.create_topics(missing)
        finally:
            await admin.close()

    asyncio.run(create())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("servers", nargs="*", help="only these (redis, kafka, mongo, smtp)")
    args = parser.parse_args(argv)
    stack = Stack(Settings())
    try:
        if args.action == "up":
            stack.up(args.servers or None)
            return 0
        if args.action == "down":
            stack.down()
            return 0
        return stack.status()
    except StackError as exc:
        say(f"error: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
