"""Run wrk (Debian's) against a URL and parse requests/s and latency percentiles."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: int


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text.strip())
    if not match:
        raise ValueError(f"unparsed latency {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def _lua_string(raw: bytes) -> str:
    return "'" + "".join(f"\\{b:03d}" for b in raw) + "'"


def run_wrk(
    url: str,
    *,
    connections: int = 64,
    threads: int = 1,
    seconds: int = 10,
    headers: dict[str, str] | None = None,
    post_body: bytes | None = None,
    paths: list[str] | None = None,
) -> WrkResult:
    """GET `url` (or POST `post_body` to it, through a Lua script) for `seconds`; with `paths`,
    each request GETs one of them (on `url`'s host) at random instead."""
    wrk = shutil.which("wrk")
    if not wrk:
        raise RuntimeError("wrk is missing: apt-get install wrk (make bench installs it as root)")
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "30s"]
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    # Pin wrk to the last core so the servers under test keep the others (there are two here).
    taskset = shutil.which("taskset")
    if taskset and (os.cpu_count() or 1) > 1:
        command = [taskset, "-c", str((os.cpu_count() or 1) - 1), *command]
    with tempfile.TemporaryDirectory() as tmp:
        if post_body is not None:
            script = Path(tmp) / "post.lua"
            script.write_text(f"wrk.method = 'POST'\nwrk.body = {_lua_string(post_body)}\n")
            command += ["-s", str(script)]
        elif paths:
            script = Path(tmp) / "paths.lua"
            listed = ",\n".join(_lua_string(path.encode()) for path in paths)
            script.write_text(
                f"local paths = {{\n{listed}\n}}\n"
                "request = function()\n"
                "  return wrk.format(nil, paths[math.random(#paths)])\n"
                "end\n"
            )
            command += ["-s", str(script)]
        out = subprocess.run(
            [*command, url], capture_output=True, text=True, check=True, cwd=Path(tmp)
        ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests_per_second=rps,
        p50_ms=p50,
        p99_ms=p99,
        requests=total,
        non_2xx=int(non2xx.group(1)) if non2xx else 0,
        errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )
