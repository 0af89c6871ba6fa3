"""Benchmark the local data plane: GET /api/products through the full path and directly.

Needs a lab built on the local target (`msctl up`). Reproduce with:

    python benchmarks/local_edge.py --state-dir .msctl --requests 3000 --concurrency 10

Full path: local edge -> API Gateway emulation -> ALB emulation -> products service -> PostgreSQL.
Direct: the same request to one products process (what the edge adds is the difference).
Targets (issue: local data plane): >= 500 requests/s and p99 < 50 ms through the full path at
concurrency 10 on a 2-core machine; the edge adds < 2 ms at p50.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
from pathlib import Path

from msctl.loadtest import run_load
from msctl.local import dataplane


def direct_url(state_dir: Path) -> str:
    """One products process, from the data plane's service logs' ports (via the ALB registry)."""
    import re

    log = (state_dir / "products-0.log").read_text(errors="replace")
    port = re.findall(r"Listening at: http://127\.0\.0\.1:(\d+)", log)[-1]
    return f"http://127.0.0.1:{port}/products"


async def measure(url: str, requests: int, concurrency: int) -> dict:
    await run_load(url, min(200, requests), concurrency)  # warm connections and pools
    return (await run_load(url, requests, concurrency)).summary()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", type=Path, default=Path(".msctl"))
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    args = parser.parse_args()
    served = dataplane.status(args.state_dir)
    if served is None:
        raise SystemExit("no local data plane running: run `msctl up` first")
    full = asyncio.run(measure(served.url + "/api/products", args.requests, args.concurrency))
    direct = asyncio.run(measure(direct_url(args.state_dir), args.requests, args.concurrency))
    result = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "full_path": full,
        "direct_to_service": direct,
        "edge_adds_p50_ms": round(full["latency_ms"]["p50"] - direct["latency_ms"]["p50"], 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
