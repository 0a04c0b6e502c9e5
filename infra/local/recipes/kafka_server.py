"""Apache Kafka in KRaft mode from the pinned jars (Maven Central): one node, or a cluster.

Every node has combined roles (broker and controller). The cluster topology runs one node per
address of `kafka_bootstrap`, node ids 1..N, each node's controller listening on its broker
port + 100. Internal topics, new topics' defaults and `min.insync.replicas` follow the
`kafka_replication_factor` and `kafka_min_insync_replicas` settings; topics are never created
on first use (auto-create is off): the stack creates the system's topics after start.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.local.recipes.base import (
    CACHE,
    REPO,
    Context,
    Group,
    Server,
    StackError,
    host_port,
    installing,
    run_checked,
    say,
)
from service_runtime import processes
from service_runtime.settings import Settings

KAFKA_POM = REPO / "infra" / "kafka" / "pom.xml"
KAFKA_LOG4J = REPO / "infra" / "kafka" / "log4j2.properties"
CONTROLLER_PORT_OFFSET = 100
CLUSTER_READY_SECONDS = 90.0


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
    libs.mkdir(parents=True, exist_ok=True)
    with installing(libs.parent / ".resolve.lock"):
        if marker.exists():
            return
        say(f"resolving Apache Kafka {kafka_version()} jars from Maven Central into {libs}")
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


def _properties(
    settings: Settings,
    node_id: int,
    host: str,
    port: int,
    controller_port: int,
    voters: str,
    data: Path,
) -> str:
    rf = settings.kafka_replication_factor
    isr = settings.kafka_min_insync_replicas
    return "\n".join(
        [
            "process.roles=broker,controller",
            f"node.id={node_id}",
            f"controller.quorum.voters={voters}",
            f"listeners=PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
            f"advertised.listeners=PLAINTEXT://{host}:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data}",
            f"num.partitions={settings.kafka_partitions}",
            "auto.create.topics.enable=false",
            f"default.replication.factor={rf}",
            f"min.insync.replicas={isr}",
            f"offsets.topic.replication.factor={rf}",
            "offsets.topic.num.partitions=6",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={isr}",
            f"share.coordinator.state.topic.replication.factor={rf}",
            f"share.coordinator.state.topic.min.isr={isr}",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=-1",
            "",
        ]
    )


def _node(
    ctx: Context,
    name: str,
    node_id: int,
    host: str,
    port: int,
    controller_port: int,
    voters: str,
    data: Path,
    cluster_id: Callable[[], str],
    heap: list[str],
    where: str,
) -> Server:
    config = data.parent / f"{name}.properties"
    libs = kafka_libs_dir()

    def prepare() -> None:
        if not shutil.which("java"):
            raise StackError("Kafka needs Java 17+ on PATH (Debian: apt-get install openjdk-17-jre-headless)")
        resolve_kafka_jars(libs)
        data.mkdir(parents=True, exist_ok=True)
        config.write_text(_properties(ctx.settings, node_id, host, port, controller_port, voters, data))
        if not (data / "meta.properties").exists():
            run_checked(
                [
                    "java",
                    *ctx.settings.kafka_jvm_options.split(),
                    "-cp",
                    f"{libs}/*",
                    "kafka.tools.StorageTool",
                    "format",
                    "-t",
                    cluster_id(),
                    "-c",
                    str(config),
                ],
                f"formatting {name}'s KRaft storage",
            )

    return Server(
        name=name,
        kind="kafka",
        host=host,
        port=port,
        prepare=prepare,
        command=lambda: [
            "java",
            *heap,
            "-XX:+UseG1GC",
            *ctx.settings.kafka_jvm_options.split(),
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J}",
            "-Djava.awt.headless=true",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(config),
        ],
        ready=lambda: kafka_ready(f"{host}:{port}"),
        timeout=120.0,
        where=where,
        describe=lambda: {
            "node_id": node_id,
            "roles": ["broker", "controller"],
            "controller_port": controller_port,
        },
    )


def single(ctx: Context) -> Group:
    host, port = host_port(ctx.settings.kafka_bootstrap.split(",")[0], 9092)
    controller_port = int(os.environ.get("CAMPAIGNS_KAFKA_CONTROLLER_PORT", "9093"))
    server = _node(
        ctx,
        name="kafka",
        node_id=1,
        host=host,
        port=port,
        controller_port=controller_port,
        voters=f"1@{host}:{controller_port}",
        data=ctx.root / "kafka",
        cluster_id=lambda: uuid.uuid4().hex[:22],
        heap=["-Xms256m", "-Xmx768m"],
        where=f"kafka://{host}:{port} (Apache Kafka {kafka_version()}, KRaft)",
    )
    # The single node's config sits where it always has, beside the data directory.
    return Group("kafka", [server], after_start=lambda: create_topics(ctx.settings))


def cluster(ctx: Context) -> Group:
    settings = ctx.settings
    nodes = [host_port(a, 9092) for a in settings.kafka_bootstrap.split(",") if a.strip()]
    if len(nodes) < settings.kafka_replication_factor:
        raise StackError(
            f"CAMPAIGNS_KAFKA_BOOTSTRAP names {len(nodes)} Kafka nodes, fewer than the replication "
            f"factor {settings.kafka_replication_factor}"
        )
    root = ctx.root / "kafka-cluster"
    voters = ",".join(
        f"{i}@{host}:{port + CONTROLLER_PORT_OFFSET}" for i, (host, port) in enumerate(nodes, 1)
    )
    id_file = root / "cluster.id"

    def cluster_id() -> str:
        """Every node of one cluster is formatted with the same id, kept beside their data."""
        if not id_file.exists():
            root.mkdir(parents=True, exist_ok=True)
            id_file.write_text(uuid.uuid4().hex[:22])
        return id_file.read_text().strip()

    heap = [f"-Xms{settings.kafka_cluster_heap_mb}m", f"-Xmx{settings.kafka_cluster_heap_mb}m"]
    servers = [
        _node(
            ctx,
            name=f"kafka-{i}",
            node_id=i,
            host=host,
            port=port,
            controller_port=port + CONTROLLER_PORT_OFFSET,
            voters=voters,
            data=root / f"node-{i}",
            cluster_id=cluster_id,
            heap=[*heap, "-XX:MaxMetaspaceSize=96m", "-XX:ReservedCodeCacheSize=48m"],
            where=f"kafka://{host}:{port} (KRaft node {i}, controller :{port + CONTROLLER_PORT_OFFSET})",
        )
        for i, (host, port) in enumerate(nodes, 1)
    ]

    def after_start() -> None:
        # Every node that runs now must have joined (a node started alone while another is down,
        # as the cluster fault tests do, waits for the ones running, at least a quorum).
        running = sum(processes.port_open(host, port) for host, port in nodes)
        wait_for_brokers(settings.kafka_bootstrap, max(running, len(nodes) // 2 + 1))
        create_topics(settings)

    return Group("kafka", servers, after_start=after_start)


# ---------------------------------------------------------------------- admin


def kafka_ready(bootstrap: str) -> bool:
    async def check() -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            await admin.close()

    return asyncio.run(check())


def describe_cluster(bootstrap: str) -> dict[str, Any]:
    async def describe() -> dict[str, Any]:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            described: dict[str, Any] = await admin.describe_cluster()
            return described
        finally:
            await admin.close()

    return asyncio.run(describe())


def wait_for_brokers(bootstrap: str, count: int) -> None:
    deadline = time.monotonic() + CLUSTER_READY_SECONDS
    seen = 0
    while time.monotonic() < deadline:
        try:
            seen = len(describe_cluster(bootstrap).get("brokers", []))
        except Exception:
            seen = 0
        if seen >= count:
            return
        time.sleep(0.5)
    raise StackError(f"the Kafka cluster shows {seen} of {count} brokers after {CLUSTER_READY_SECONDS:.0f}s")


def create_topics(settings: Settings) -> None:
    """Create every topic of the system with the configured partitions, replication factor and
    min ISR (idempotent: existing topics are left as they are; `campaigns kafka topics
    --reconcile` grows them)."""
    from aiokafka.errors import KafkaError

    from service_runtime.kafka_topics import ensure_topics

    # A node started while another is down: until the controller has fenced the dead one (its
    # broker session, ~9 s), metadata still names it and a request sent to it fails; try again.
    deadline = time.monotonic() + CLUSTER_READY_SECONDS
    while True:
        try:
            asyncio.run(ensure_topics(settings))
            return
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise StackError(f"the topics could not be created or checked: {exc}") from exc
            time.sleep(1.0)
