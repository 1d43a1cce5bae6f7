"""Client-side probes that run the same request sequences against a real engine and the emulator.

Everything is measured the way a router sees it: over HTTP, streaming, time to the first content chunk.
Prompts are token id lists so both engines see exactly the same tokens and block boundaries.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

# Token ids safe for the tiny model's 4096-token vocabulary (special tokens are 0-2).
TOKEN_LOW, TOKEN_HIGH = 10, 4000
SCRAPED = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:prefix_cache_queries_total",
    "vllm:prefix_cache_hits_total",
    "vllm:num_preemptions_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
)


class IdleClock:
    """Turns a request's wall-clock time into the time it would take on an idle machine (Linux schedstat).

    This box is shared: under load an engine waits for a core and its wall-clock times stretch by 1-5x.
    ``mode="cpu"`` (a real vLLM pinned to ONE core: API server and engine core processes share it, so on an idle
    machine their wall time is their CPU time): idle time = CPU time used by the whole process tree.
    ``mode="wait"`` (the emulator: its model time is spent sleeping, not computing): idle time = wall time less
    the time its threads (and the client's, ``client_pid``) sat runnable waiting for a CPU."""

    def __init__(self, pid: int, mode: str, client_pid: int | None = None) -> None:
        if mode not in ("cpu", "wait"):
            raise ValueError(f"mode must be 'cpu' or 'wait', got {mode!r}")
        self.mode = mode
        self.pids = descendants(pid)  # vLLM runs its engine core in a child process of the API server
        if client_pid is not None:  # in "wait" mode the client's own waits stretch the wall time too
            self.pids.append(client_pid)

    @staticmethod
    def available() -> bool:
        return Path("/proc/self/schedstat").exists()

    def snapshot(self) -> float:
        field = 0 if self.mode == "cpu" else 1  # schedstat: on-CPU ns, run-queue wait ns, timeslices
        total = 0
        for pid in self.pids:
            for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
                try:
                    total += int(task.read_text().split()[field])
                except (OSError, IndexError, ValueError):
                    continue  # a thread that just ended
        return total / 1e9

    def idle_elapsed(self, wall: float, before: float, after: float) -> float:
        return after - before if self.mode == "cpu" else max(0.0, wall - (after - before))


def descendants(pid: int) -> list[int]:
    """``pid`` and all its descendant processes (from /proc/<pid>/task/<tid>/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for children in Path(f"/proc/{p}/task").glob("*/children"):
            try:
                todo.extend(int(c) for c in children.read_text().split())
            except OSError:
                continue
    return out


def token_ids(n: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(TOKEN_LOW, TOKEN_HIGH) for _ in range(n)]


@dataclass(frozen=True, slots=True)
class Timing:
    ttft: float  # seconds from sending to the first content chunk
    e2e: float
    token_times: tuple[float, ...]  # arrival of each content chunk, seconds after sending
    completion_tokens: int
    cached_tokens: int
    idle_ttft: float = 0.0  # the same on an idle machine (IdleClock), or = ttft without a clock
    idle_e2e: float = 0.0

    @property
    def mean_itl(self) -> float:
        t = self.token_times
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else 0.0

    @property
    def idle_itl(self) -> float:
        n = len(self.token_times)
        return max(0.0, self.idle_e2e - self.idle_ttft) / (n - 1) if n > 1 else 0.0


async def stream_completion(
    client: httpx.AsyncClient,
    url: str,
    prompt: list[int],
    max_tokens: int,
    model: str = "tiny",
    clock: IdleClock | None = None,
) -> Timing:
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    times: list[float] = []
    usage: dict = {}
    snap0 = clock.snapshot() if clock else 0.0
    snap_first = snap0
    start = time.perf_counter()
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{url}: HTTP {response.status_code}: {(await response.aread())[:500]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices"):
                times.append(time.perf_counter() - start)
                if clock and len(times) == 1:
                    snap_first = clock.snapshot()
            if chunk.get("usage"):
                usage = chunk["usage"]
    end = time.perf_counter() - start
    snap_end = clock.snapshot() if clock else 0.0
    ttft = times[0] if times else end
    details = usage.get("prompt_tokens_details") or {}
    return Timing(
        ttft=ttft,
        e2e=end,
        token_times=tuple(times),
        completion_tokens=int(usage.get("completion_tokens", 0)),
        cached_tokens=int(details.get("cached_tokens") or 0),
        idle_ttft=clock.idle_elapsed(ttft, snap0, snap_first) if clock else ttft,
        idle_e2e=clock.idle_elapsed(end, snap0, snap_end) if clock else end,
    )


async def scrape(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    text = (await client.get(f"{url}/metrics")).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in SCRAPED:
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


async def latency_totals(client: httpx.AsyncClient, url: str) -> dict[str, float]:
    """Sums and counts of the TTFT and inter-token histograms (for engine-clock deltas around a probe)."""
    text = (await client.get(f"{url}/metrics")).text
    wanted = {f"vllm:{h}_{k}" for h in ("time_to_first_token_seconds", "inter_token_latency_seconds")
              for k in ("sum", "count")}
    out = dict.fromkeys(wanted, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in wanted:
                out[sample.name] += sample.value
    return out


class EngineTimes:
    """Mean TTFT / ITL of the requests run inside ``async with`` from an engine's own /metrics histograms.

    For the emulator these are engine-clock times (its model, untouched by this box's load); requests must
    not overlap with others outside the block."""

    def __init__(self, client: httpx.AsyncClient, url: str) -> None:
        self.client, self.url = client, url
        self.ttft = self.itl = 0.0

    async def __aenter__(self) -> EngineTimes:
        self._before = await latency_totals(self.client, self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        after = await latency_totals(self.client, self.url)
        d = {k: after[k] - self._before[k] for k in after}
        ttft_n = d["vllm:time_to_first_token_seconds_count"]
        itl_n = d["vllm:inter_token_latency_seconds_count"]
        self.ttft = d["vllm:time_to_first_token_seconds_sum"] / ttft_n if ttft_n else 0.0
        self.itl = d["vllm:inter_token_latency_seconds_sum"] / itl_n if itl_n else 0.0


async def cache_config(client: httpx.AsyncClient, url: str) -> dict[str, str]:
    text = (await client.get(f"{url}/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "vllm:cache_config_info":
            return dict(family.samples[0].labels)
    raise RuntimeError(f"{url}/metrics has no vllm:cache_config_info")


async def burst(
    client: httpx.AsyncClient,
    url: str,
    prompts: list[list[int]],
    max_tokens: int,
    poll_s: float = 0.02,
    clock: IdleClock | None = None,
) -> tuple[list[Timing], dict[str, float]]:
    """Send all prompts at once; poll /metrics while they run. Returns the timings and the peak of each
    scraped gauge (running, waiting, KV usage), plus ``in_system``: the peak of running + waiting in one scrape."""
    peaks = {"vllm:num_requests_running": 0.0, "vllm:num_requests_waiting": 0.0, "vllm:kv_cache_usage_perc": 0.0,
             "in_system": 0.0}
    tasks = [asyncio.create_task(stream_completion(client, url, p, max_tokens, clock=clock)) for p in prompts]

    async def poll() -> None:
        while True:
            m = await scrape(client, url)
            m["in_system"] = m.get("vllm:num_requests_running", 0.0) + m.get("vllm:num_requests_waiting", 0.0)
            for k in peaks:
                peaks[k] = max(peaks[k], m.get(k, 0.0))
            await asyncio.sleep(poll_s)

    poller = asyncio.create_task(poll())
    try:
        timings = await asyncio.gather(*tasks)
    finally:
        poller.cancel()
    return list(timings), peaks


def median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


@dataclass(frozen=True)
class Meter:
    """How to read load-free times from one engine: a real engine by its CPU time (``IdleClock``), the
    emulator by its engine clock (``EngineTimes``)."""

    url: str
    clock: IdleClock | None = None

    async def ttft(self, client: httpx.AsyncClient, prompt: list[int], max_tokens: int = 2) -> Timing:
        """One request alone; returns its timing with ``idle_ttft`` filled in."""
        if self.clock is not None:
            return await stream_completion(client, self.url, prompt, max_tokens, clock=self.clock)
        async with EngineTimes(client, self.url) as times:
            timing = await stream_completion(client, self.url, prompt, max_tokens)
        return dataclasses.replace(timing, idle_ttft=times.ttft, idle_e2e=timing.e2e)

    async def burst(self, client: httpx.AsyncClient, prompts: list[list[int]], max_tokens: int) -> tuple[float, float]:
        """All prompts at once: (mean TTFT, mean inter-token latency), load-free."""
        if self.clock is not None:
            timings, _ = await burst(client, self.url, prompts, max_tokens, poll_s=3600, clock=self.clock)
            itls = [t.idle_itl for t in timings if len(t.token_times) > 1]
            return sum(t.idle_ttft for t in timings) / len(timings), (sum(itls) / len(itls) if itls else 0.0)
        async with EngineTimes(client, self.url) as times:
            await burst(client, self.url, prompts, max_tokens, poll_s=3600)
        return times.ttft, times.itl
