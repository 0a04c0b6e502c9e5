"""MongoDB: Debian's `mongod` as a one-member replica set if installed, else SecantusDB.

SecantusDB (a MongoDB-compatible server on PyPI, installed into a venv of its own) runs as a
single node with transactions and change streams; it has no replication, so the cluster
topology keeps this one node too (a 3-member replica set needs real `mongod`s).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlparse

from infra.local.recipes.base import TOOLS, Context, Group, Server, StackError, installing, run_checked, say

SECANTUS_VERSION = "0.7.0b3"


def single(ctx: Context) -> Group:
    url = urlparse(ctx.settings.mongo_url)
    host, port = url.hostname or "127.0.0.1", url.port or 27017
    data = ctx.root / "mongo"
    mongod = shutil.which("mongod")
    mongo_url = ctx.settings.mongo_url
    if mongod:
        server = Server(
            name="mongo",
            kind="mongo",
            host=host,
            port=port,
            prepare=lambda: data.mkdir(parents=True, exist_ok=True),
            command=lambda: [
                mongod,
                *("--replSet", "rs0", "--bind_ip", host, "--port", str(port)),
                *("--dbpath", str(data), "--quiet"),
            ],
            ready=lambda: mongo_ready(mongo_url),
            where=f"mongodb://{host}:{port} (mongod, replica set rs0)",
            describe=lambda: {"server": "mongod", "replica_set": "rs0"},
        )
        return Group("mongo", [server], after_start=lambda: initiate_replica_set(host, port))
    venv = TOOLS / "secantus"

    def prepare() -> None:
        data.mkdir(parents=True, exist_ok=True)
        python = venv / "bin" / "python"
        with installing(TOOLS / ".secantus-install.lock"):
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

    server = Server(
        name="mongo",
        kind="mongo",
        host=host,
        port=port,
        prepare=prepare,
        command=lambda: [
            str(venv / "bin" / "python"),
            *("-m", "secantus", "--host", host, "--port", str(port)),
            *("--storage-path", str(data), "--log-level", "WARNING"),
            # Without it a commit returns before its journal record reaches the OS: a
            # SIGKILL then loses the last acknowledged transactions (accepted commands).
            "--sync-on-commit",
        ],
        ready=lambda: mongo_ready(mongo_url),
        where=f"mongodb://{host}:{port} (SecantusDB {SECANTUS_VERSION})",
        describe=lambda: {"server": f"SecantusDB {SECANTUS_VERSION}", "replica_set": None},
    )
    return Group("mongo", [server])


def mongo_ready(url: str) -> bool:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    try:
        client: MongoClient[dict[str, Any]]
        # Every wait bounded: a server that answers `hello` but hangs on the `endSessions` the
        # client sends when it closes must make this probe fail, not hang `stack up` forever.
        with MongoClient(
            url, serverSelectionTimeoutMS=1000, connectTimeoutMS=2000, socketTimeoutMS=10000
        ) as client:
            hello = client.admin.command("hello")
            return bool(hello.get("isWritablePrimary") or hello.get("ismaster"))
    except PyMongoError:
        return False


def initiate_replica_set(host: str, port: int) -> None:
    from pymongo import MongoClient
    from pymongo.errors import OperationFailure

    client: MongoClient[dict[str, Any]]
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
