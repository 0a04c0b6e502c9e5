"""`campaigns serve workers` as a process: it works, reports its status, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path

import orjson

from events import Topics, encode_event, new_envelope
from service_runtime.redis_client import connect_redis
from service_runtime.settings import Settings
from tests.integration.workers.harness import mails_to, produce, wait_for
from tests.support.services import settings_env
from tests.support.stack import REPO


async def test_workers_process_sends_mail_heartbeats_and_exits_cleanly_on_sigterm(
    settings: Settings, tmp_path: Path
) -> None:
    log = (tmp_path / "workers.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "launcher",
        "serve",
        "workers",
        cwd=REPO,
        env={**settings_env(settings), "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=asyncio.subprocess.STDOUT,
    )
    redis = connect_redis(settings)
    status_key = f"{settings.redis_prefix}:status:worker:notifications"
    try:

        async def status(state: str) -> bool:
            raw = await redis.get(status_key)
            return raw is not None and orjson.loads(raw)["state"] == state

        await wait_for(lambda: status("running"), what="the workers' heartbeat")

        user_id = uuid.uuid4().hex
        recipient = f"process-{user_id}@example.com"
        event = new_envelope(
            event_type="UserRegistered",
            aggregate_id=user_id,
            aggregate_version=1,
            payload={"email": recipient, "name": "Bea", "roles": ["user"]},
            correlation_id="corr-process",
        )
        await produce(
            settings, Topics(settings.topic_prefix).users, [(user_id.encode(), encode_event(event))]
        )
        shared_sink = REPO / settings.local_dir / "smtp"

        async def delivered() -> bool:
            return bool(mails_to(shared_sink, recipient))

        await wait_for(delivered, what="the welcome e-mail")

        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
        assert code == 0, (tmp_path / "workers.log").read_text()
        assert await status("stopped")
        final = orjson.loads(await redis.get(status_key))
        assert final["outcomes"] == {"sent": 1}
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        log.close()
        await redis.aclose()
    lines = [orjson.loads(line) for line in (tmp_path / "workers.log").read_text().splitlines() if line]
    assert any(entry.get("msg") == "workers stopped" for entry in lines)
