"""A bounded load test of ``cnnkit serve`` on loopback (issue 16): no failed request, latency
percentiles, memory stable.

    python benchmarks/serve_load.py RUN IMAGE --requests 200 --clients 8

Starts the app of ``RUN`` in this process (uvicorn in a thread, on a free 127.0.0.1 port: no other
address is ever contacted), sends ``--requests`` uploads of ``IMAGE`` from ``--clients`` concurrent
clients (threads, one HTTP request each at a time), with every tenth upload a corrupt file (which
must get its 400 page), then stops. Prints failures, latency percentiles (p50, p90, p99, max) and the
process's resident memory before, at half-way and at the end. Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import socket
import statistics
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path


def rss_mib() -> float:
    """This process's resident memory (Linux ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def multipart(filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("image")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    import uvicorn

    from cnnkit.deploy.serve import create_app, load_runs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(
        create_app(load_runs([args.run])), host="127.0.0.1", port=port, log_level="error"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/predict"
    good = Path(args.image).read_bytes()
    bad = good[: max(1, len(good) // 3)]
    memory = {"start": rss_mib()}

    def one(i: int) -> tuple[bool, float]:
        corrupt = i % 10 == 9
        body, content_type = multipart(
            "bad.png" if corrupt else "good.png", bad if corrupt else good
        )
        request = urllib.request.Request(url, body, {"Content-Type": content_type})
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                ok = answer.status == 200 and b'id="result"' in answer.read() and not corrupt
        except urllib.error.HTTPError as exc:
            ok = corrupt and exc.code == 400 and b'id="error"' in exc.read()
        except OSError:
            ok = False
        if i == args.requests // 2:
            memory["half-way"] = rss_mib()
        return ok, time.perf_counter() - start

    with concurrent.futures.ThreadPoolExecutor(args.clients) as pool:
        results = list(pool.map(one, range(args.requests)))
    memory["end"] = rss_mib()
    server.should_exit = True
    thread.join(timeout=10)
    latencies = sorted(t * 1000 for _, t in results)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    failed = sum(not ok for ok, _ in results)
    print(f"{args.requests} requests from {args.clients} clients on 127.0.0.1: {failed} failed")
    print(f"latency ms: p50 {q[49]:.0f}, p90 {q[89]:.0f}, p99 {q[98]:.0f}, max {latencies[-1]:.0f}")
    print("resident memory MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in memory.items()))


if __name__ == "__main__":
    main()
