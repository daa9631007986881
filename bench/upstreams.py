"""Fixed-response upstream servers for benchmarks: nginx when installed, else our own server.

`start_upstreams(n, body)` returns the URLs of `n` servers that answer every POST with
`body`, pinned to `cpu` when given, and a `stop()` function. nginx (Debian's `nginx-light`)
is the faster responder, so the client under test stays the bottleneck.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _wait_listening(ports: list[int], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"upstream on port {port} did not start") from None
                time.sleep(0.05)


def _taskset(cpu: int | None) -> list[str]:
    if cpu is None or not shutil.which("taskset") or os.cpu_count() in (None, 1):
        return []
    return ["taskset", "-c", str(cpu)]


NGINX_CONF = """
{load_modules}
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log crit;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path {root}/body;
  map $request_body $openrtb_id {{ "~^\\{{\\"id\\":\\"(?<id>[^\\"]+)\\"" $id; default "unknown"; }}
{servers}
}}
"""
NGINX_SERVER = """  server {{ listen 127.0.0.1:{port}; location / {{
    client_body_buffer_size 64k;
    default_type application/json; return 200 '{body}'; }} }}"""


ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
NGINX_BIDDER = """  server {{ listen 127.0.0.1:{port}; location / {{
    client_body_buffer_size 64k; echo_read_request_body; default_type application/json;
    echo '{{"id":"$openrtb_id","seatbid":[{{"seat":"{seat}","bid":[{{"id":"{seat}-1","impid":"1","price":{price},"adm":"<div>{seat}</div>","crid":"{seat}-c1","adomain":["{seat}.example"]}}]}}]}}'; }} }}"""
NGINX_NO_BID = """  server {{ listen 127.0.0.1:{port}; location / {{ client_body_buffer_size 64k; return 204; }} }}"""


def start_dsps(
    prices: list[float | None], cpu: int | None = 1
) -> tuple[list[str], str, Callable[[], None]]:
    """nginx DSPs: each bids its price on imp "1" (echoing the request id), or, for None,
    answers 204 (no bid). Needs nginx with the echo module (Debian's nginx-light)."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists() or not ECHO_MODULE.exists():
        raise RuntimeError(
            "bidding DSPs need nginx with the echo module: apt-get install nginx-light"
        )
    ports = free_ports(len(prices))
    root = Path(tempfile.mkdtemp(prefix="openbid-dsps-"))
    servers = "\n".join(
        NGINX_NO_BID.format(port=port)
        if price is None
        else NGINX_BIDDER.format(port=port, seat=f"dsp{i}", price=price)
        for i, (port, price) in enumerate(zip(ports, prices, strict=True))
    )
    (root / "nginx.conf").write_text(
        NGINX_CONF.format(root=root, servers=servers, load_modules=f"load_module {ECHO_MODULE};")
    )
    process = subprocess.Popen(
        [*_taskset(cpu), nginx, "-c", str(root / "nginx.conf"), "-p", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_listening(ports)
    except RuntimeError:
        process.kill()
        raise RuntimeError(f"nginx failed: {process.stderr.read().decode()[-500:]}") from None

    def stop() -> None:
        process.terminate()
        process.wait(5)
        shutil.rmtree(root, ignore_errors=True)

    what = f"nginx (1 worker, echo module){', pinned to cpu ' + str(cpu) if _taskset(cpu) else ''}"
    return [f"http://127.0.0.1:{p}/bid" for p in ports], what, stop


def start_upstreams(
    n: int, body: bytes, cpu: int | None = 1, prefer: str = "nginx"
) -> tuple[list[str], str, Callable[[], None]]:
    """Starts `n` responders; returns (urls, what served them, stop)."""
    ports = free_ports(n)
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    root = Path(tempfile.mkdtemp(prefix="openbid-upstreams-"))
    if prefer == "nginx" and nginx:
        servers = "\n".join(
            NGINX_SERVER.format(port=p, body=body.decode().replace("'", "\\'")) for p in ports
        )
        (root / "nginx.conf").write_text(
            NGINX_CONF.format(root=root, servers=servers, load_modules="")
        )
        command = [*_taskset(cpu), nginx, "-c", str(root / "nginx.conf"), "-p", str(root)]
        what = "nginx (1 worker)"
    else:
        command = [
            *_taskset(cpu),
            sys.executable,
            "-m",
            "bench_responder",
            ",".join(map(str, ports)),
            body.decode(),
        ]
        what = "openbid HttpServer responder (1 process)"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_listening(ports)
    except RuntimeError:
        process.kill()
        raise RuntimeError(f"{what} failed: {process.stderr.read().decode()[-500:]}") from None
    if cpu is not None and _taskset(cpu):
        what += f", pinned to cpu {cpu}"

    def stop() -> None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(root, ignore_errors=True)

    return [f"http://127.0.0.1:{p}/bid" for p in ports], what, stop
