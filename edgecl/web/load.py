"""A bounded HTTP load on the console's read API (issue 9, point 4).

Runs a fixed number of GET requests from a few threads against a running console and reports
errors, latency percentiles and throughput; the caller measures the detection loop's fps meanwhile
(``fps with load >= 0.9 x idle``). Standard library only, so it runs on the device itself.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import Counter

import numpy as np

DEFAULT_PATHS = ("/api/live", "/api/frame.jpg", "/api/models", "/healthz", "/api/labels/pending",
                 "/metrics")
"""What a console viewer polls: vital signs, the live frame, the model list, health, queue."""


def run_load(base_url: str, requests: int = 500, threads: int = 8, token: str | None = None,
             paths: tuple[str, ...] = DEFAULT_PATHS, timeout_s: float = 10.0) -> dict:
    """Send ``requests`` GETs spread over ``threads`` threads, round-robin over ``paths``.

    Args:
        base_url: e.g. ``http://127.0.0.1:8765`` (no trailing slash needed).
        requests: total number of requests (bounded: the run ends after them).
        threads: concurrent client threads (each keeps one request in flight).
        token: bearer token, when the console has one.
        paths: the GET paths to cycle through.
        timeout_s: per-request timeout in seconds.

    Returns:
        ``{"requests", "threads", "errors", "error_kinds" ({"HTTP 503": n, "URLError": n, ...}),
        "p50_ms", "p95_ms", "max_ms", "rps", "elapsed_s"}``; an error is any status >= 400 or a
        failed connection. Latencies are wall-clock per request, in milliseconds.

    Raises:
        ValueError: ``requests`` or ``threads`` below 1, or no paths.
    """
    if requests < 1 or threads < 1 or not paths:
        raise ValueError("requests and threads must be >= 1 and paths non-empty")
    base = base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    latencies_ms: list[float] = []
    errors: Counter = Counter()
    lock = threading.Lock()
    next_index = iter(range(requests))

    def worker() -> None:
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                return
            req = urllib.request.Request(base + paths[index % len(paths)], headers=headers)
            started = time.perf_counter()
            kind = None
            try:
                with urllib.request.urlopen(req, timeout=timeout_s) as response:
                    response.read()
            except urllib.error.HTTPError as err:
                kind = f"HTTP {err.code}"
            except (urllib.error.URLError, OSError) as err:
                kind = type(err).__name__
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            with lock:
                latencies_ms.append(elapsed_ms)
                if kind:
                    errors[kind] += 1

    started_s = time.perf_counter()
    pool = [threading.Thread(target=worker, name=f"edgecl-load-{i}", daemon=True)
            for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed_s = time.perf_counter() - started_s
    lat = np.asarray(latencies_ms, dtype=np.float64)
    return {"requests": requests, "threads": threads, "errors": int(sum(errors.values())),
            "error_kinds": dict(errors),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "max_ms": round(float(lat.max()), 2),
            "rps": round(requests / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "elapsed_s": round(elapsed_s, 3)}
