"""The SMTP sink (infra/local/smtp_sink.py): accepts every message and keeps it as a file."""

from __future__ import annotations

import sys

from infra.local.recipes.base import REPO, Context, Group, Server


def single(ctx: Context) -> Group:
    settings = ctx.settings
    maildir = ctx.root / "smtp"
    server = Server(
        name="smtp",
        kind="smtp",
        host=settings.smtp_host,
        port=settings.smtp_port,
        prepare=lambda: maildir.mkdir(parents=True, exist_ok=True),
        command=lambda: [
            sys.executable,
            str(REPO / "infra" / "local" / "smtp_sink.py"),
            *("--host", settings.smtp_host, "--port", str(settings.smtp_port)),
            *("--maildir", str(maildir)),
        ],
        where=f"smtp://{settings.smtp_host}:{settings.smtp_port} (sink, mail in {maildir})",
        describe=lambda: {"maildir": str(maildir)},
    )
    return Group("smtp", [server])
