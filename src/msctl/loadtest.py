"""`msctl test-api --load`: the seed's `ab -n 1000 -c 10` load test against one URL, with
requests/s, latency percentiles, status codes and errors."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp


@dataclass
class LoadReport:
    url: str
    requests: int
    concurrency: int
    seconds: float
    latencies_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return sum(self.errors.values()) + sum(n for s, n in self.statuses.items() if s >= 400)

    def percentile(self, p: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
        return ordered[index]

    def summary(self) -> dict:
        return {
            "url": self.url,
            "requests": self.requests,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 3),
            "requests_per_second": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "latency_ms": {
                name: round(self.percentile(p), 2)
                for name, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
            },
            "status_codes": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "failed": self.failed,
        }


async def run_load(
    url: str,
    requests: int,
    concurrency: int,
    on_progress: Callable[[int], None] = lambda _n: None,
    timeout: float = 30.0,
) -> LoadReport:
    """`ab -n requests -c concurrency url`: a fixed number of GETs from `concurrency` workers."""
    report = LoadReport(url, requests, concurrency, 0.0)
    remaining = iter(range(requests))
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:

        async def worker() -> None:
            for _ in remaining:
                started = time.perf_counter()
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        report.statuses[resp.status] += 1
                except (TimeoutError, aiohttp.ClientError) as exc:
                    report.errors[type(exc).__name__] += 1
                report.latencies_ms.append((time.perf_counter() - started) * 1000)
                on_progress(1)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        report.seconds = time.perf_counter() - began
    return report
