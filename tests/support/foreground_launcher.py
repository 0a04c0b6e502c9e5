"""`campaigns run` in the foreground with stand-in services, for the Ctrl-C test.

The real launcher path (`Supervisor.run_with_stack`: stack up, services in the foreground,
everything stopped in the end) runs with the stack's Redis and SMTP sink as its servers and three
quick stand-ins as services: one that answers the readiness URL, one that prints all the time
(so the launcher keeps writing to its output pipe) and one that only sleeps. The environment
gives the local directory, the Redis and SMTP ports, the readiness port and where to write our pid.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from launcher.supervisor import Supervisor
from service_runtime import processes
from service_runtime.settings import Settings

REPO = Path(__file__).resolve().parents[2]
STACK = REPO / "infra" / "local" / "stack.py"


def main() -> int:
    Path(os.environ["LAUNCHER_PID_FILE"]).write_text(str(os.getpid()))
    port = int(os.environ["LAUNCHER_READY_PORT"])
    serve_dir = os.environ["LAUNCHER_SERVE_DIR"]
    chatty = "import time\nwhile True:\n    print('tick ' * 20, flush=True)\n    time.sleep(0.01)"
    commands = {
        "ready": [sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", serve_dir, str(port)],
        "chatty": [sys.executable, "-u", "-c", chatty],
        "sleeper": ["sleep", "600"],
    }
    supervisor = Supervisor(
        REPO, Settings(), list(commands), commands=commands, ready_urls=[f"http://127.0.0.1:{port}/"]
    )

    def stack(action: str) -> int:
        servers = ["redis", "smtp"] if action == "up" else []
        process = subprocess.Popen([sys.executable, str(STACK), action, *servers], cwd=REPO)
        return processes.wait_through_interrupts(process)

    return supervisor.run_with_stack(stack)


if __name__ == "__main__":
    sys.exit(main())
