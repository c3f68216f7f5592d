"""Load test of a running ``actsearch serve``: many owners' searches training while reads pour in.

What it does (issue #8): start ``actsearch serve`` (embedded: SQLite, the runner
and its training children) with API keys required, create one key per owner,
submit every owner's searches at once over HTTP, then send reads at a fixed rate
for a fixed time from an **open-loop** generator: request ``i`` is due at
``t0 + i / rate`` whether or not earlier ones have answered, and its latency is
measured from that due time, so a stalled server shows up as latency instead of
silently lowering the request rate (coordinated omission). The reads are a mix of
what the dashboard and API clients ask, each with its owner's key and about that
owner's own searches and trials. Finally it waits for every search to finish.

Run it alone (prints the figures and writes ``artifacts/load.json``)::

    .venv/bin/python -m bench.load --rate 200 --duration 60

``--stall`` runs the other scenario: one owner keeps 48 built-in generations in flight
while another owner reads ``/health`` and its own search (:func:`run_stall`).

``tests/load/test_load.py`` runs it and asserts the issue's bounds. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

T = TypeVar("T")
ARTIFACT = Path(__file__).resolve().parent.parent / "artifacts" / "load.json"
TERMINAL = ("complete", "failed", "cancelled")

# A tiny search: what the service does per search (study, populations, finalists,
# test score) at a training cost of about a second on one core.
TINY_SEARCH: dict[str, Any] = {
    "dataset": "iris", "architecture": "mlp:16", "families": ["relu", "tanh"], "trials": 4,
    "epochs": 3, "population_size": 2, "finalist_seeds": 2, "batch_size": 32,
}

# (weight, kind): the read mix. Kinds needing a search or trial id draw one of the
# owner's own (the trial ids are learnt from the trial lists as they fill).
READ_MIX: tuple[tuple[float, str], ...] = (
    (14, "list_searches"),
    (24, "search"),
    (14, "search_trials"),
    (6, "query_trials"),
    (14, "trial"),
    (6, "leaderboard"),
    (5, "intermediate"),
    (2, "importance"),
    (8, "me"),
    (7, "health"),
)


@dataclass
class LoadConfig:
    """How much load, from how many owners, with which searches."""

    rate: float = 200.0  # reads per second, in all
    duration_s: float = 60.0
    owners: int = 5
    searches_per_owner: int = 4
    search: dict[str, Any] = field(default_factory=lambda: dict(TINY_SEARCH))
    request_timeout_s: float = 10.0
    complete_timeout_s: float = 240.0  # after the reads, for the searches to finish
    seed: int = 0
    runner_workers: int = 1  # training processes of the embedded runner
    service_env: dict[str, str] = field(default_factory=dict)  # extra ACTSEARCH_* for serve
    api_workers: int = 2  # API processes: one core each for reads while training runs


@dataclass
class LoadReport:
    """The figures: latency percentiles (ms) from each read's due time, rates, errors."""

    requests: int
    ok: int
    errors: dict[str, int]
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    target_rps: float
    achieved_rps: float
    duration_s: float
    max_start_lag_ms: float  # how late the generator itself sent a request (client saturation)
    api_cpu_ms_per_read: float  # the API process's CPU time during the reads, per read
    client_cpu_ms_per_read: float  # this generator's own CPU time, per read
    load_average: list[float]  # the machine's 1/5/15-minute load at the end of the reads
    per_kind_p95_ms: dict[str, float]
    per_kind_count: dict[str, int]
    searches: int
    search_states: dict[str, int]
    searches_done_s: float  # from submission until every search had finished
    cpu_count: int
    config: dict[str, Any]
    api_cpu_share: list[float] = field(default_factory=list)  # of the API CPU, per process

    def summary(self) -> str:
        return (f"{self.requests} reads in {self.duration_s:.1f} s ({self.achieved_rps:.1f}/s "
                f"of {self.target_rps:.0f}/s target): p50 {self.p50_ms:.1f} ms, p95 "
                f"{self.p95_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, max {self.max_ms:.1f} ms; "
                f"errors {self.errors or 'none'}; searches {self.search_states} "
                f"(all done {self.searches_done_s:.1f} s after submission); "
                f"generator lag max {self.max_start_lag_ms:.1f} ms; CPU per read: API "
                f"{self.api_cpu_ms_per_read:.2f} ms (shares {self.api_cpu_share}), generator "
                f"{self.client_cpu_ms_per_read:.2f} ms; {self.cpu_count} CPUs, load average {self.load_average}")


# --------------------------------------------------------------------------- the service


@dataclass
class Service:
    url: str
    home: Path
    proc: Any  # tests.utils.servers.ServiceProcess

    def log_tail(self, chars: int = 4000) -> str:
        return str(self.proc.tail(chars))


@contextmanager
def running_service(home: Path, *, runner_workers: int = 1, api_workers: int = 1,
                    extra_env: dict[str, str] | None = None) -> Iterator[Service]:
    """``actsearch serve`` (embedded, auth on) on a free loopback port, its own home."""
    from tests.utils.servers import free_port, start_service, wait_for

    env = {"ACTSEARCH_HOME": str(home), "ACTSEARCH_AUTH__ENABLED": "true",
           "ACTSEARCH_WORKERS": str(runner_workers), "OMP_NUM_THREADS": "1",
           "ACTSEARCH_TORCH_THREADS": "1", **(extra_env or {})}
    port = free_port()
    proc = start_service("serve", ["serve", "--host", "127.0.0.1", "--port", str(port),
                                   "--log-level", "warning", "--api-workers", str(api_workers)],
                         env, home / "logs", inherit_actsearch_env=False)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_for(lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, 90,
                        0.3):
            raise RuntimeError(f"actsearch serve did not come up:\n{proc.tail()}")
        yield Service(url, home, proc)
    finally:
        with contextlib.suppress(ProcessLookupError):  # serve stops its runner on SIGTERM
            os.killpg(proc.proc.pid, signal.SIGTERM)
        try:
            proc.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()


def make_keys(home: Path, owners: list[str]) -> dict[str, str]:
    """One non-admin API key per owner, written straight to the service's database."""
    from core.settings import Settings
    from store import repo
    from store.db import init_db, make_engine, session_factory

    # explicit: an ACTSEARCH_DATABASE_URL in this process's environment must not leak in
    url = Settings(home=home, database_url=f"sqlite:///{home / 'actsearch.db'}",
                   broker_url=None).resolved_database_url
    init_db(url)
    engine = make_engine(url)
    try:
        with session_factory(engine).begin() as session:
            return {o: repo.create_api_key(session, owner=o, admin=False)[1] for o in owners}
    finally:
        engine.dispose()


# --------------------------------------------------------------------------- the reads


@dataclass
class _Owner:
    name: str
    headers: dict[str, str]
    searches: list[int]
    trials: list[int] = field(default_factory=list)


def _path(kind: str, owner: _Owner, rng: random.Random) -> str:
    sid = rng.choice(owner.searches)
    if kind == "trial" and not owner.trials:
        kind = "search_trials"  # no trial recorded yet: ask for the list that reveals them
    return {
        "list_searches": "/searches?limit=20",
        "search": f"/searches/{sid}",
        "search_trials": f"/searches/{sid}/trials?limit=20",
        "query_trials": "/trials?limit=20&state=complete",
        "trial": f"/trials/{rng.choice(owner.trials[-200:]) if owner.trials else 0}",
        "leaderboard": f"/searches/{sid}/leaderboard",
        "intermediate": f"/searches/{sid}/intermediate",
        "importance": f"/searches/{sid}/importance",
        "me": "/me",
        "health": "/health",
    }[kind]


@dataclass
class _Sample:
    kind: str
    latency_s: float
    start_lag_s: float
    outcome: str  # "ok" or an error class: "5xx", "429", "4xx:<code>", "timeout", "connect"


class _StaleConnection(Exception):
    """A kept-alive connection the server had closed before our request: retry on a new one."""


class _Http:
    """A minimal HTTP/1.1 keep-alive client for GETs on loopback (asyncio streams).

    The generator shares the 2 cores with the service it measures: httpx costs
    about 5 ms of CPU per request here, enough to saturate a core at 200/s and
    bill the client's own queueing to the server. This one costs a fraction of
    that. It speaks exactly what uvicorn answers (Content-Length or chunked).
    """

    def __init__(self, host: str, port: int, max_connections: int) -> None:
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.opened = 0
        self.idle: asyncio.LifoQueue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.LifoQueue())

    async def _acquire(self, fresh: bool = False
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """A connection, and whether it was reused (the server may have closed it idle)."""
        if not fresh and (not self.idle.empty() or self.opened >= self.max_connections):
            reader, writer = await self.idle.get()
            return reader, writer, True
        self.opened += 1
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
        except BaseException:
            self.opened -= 1
            raise
        return reader, writer, False

    def _discard(self, writer: asyncio.StreamWriter) -> None:
        self.opened -= 1
        writer.close()

    async def get(self, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        try:
            return await self._get(path, headers, fresh=False)
        except _StaleConnection:  # closed by the server while idle (keep-alive timeout)
            return await self._get(path, headers, fresh=True)

    async def _get(self, path: str, headers: dict[str, str], fresh: bool) -> tuple[int, bytes]:
        reader, writer, reused = await self._acquire(fresh)
        try:
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n{head}\r\n".encode())
            try:
                raw = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
                partial = getattr(exc, "partial", b"")
                if reused and not partial:
                    raise _StaleConnection() from exc
                raise
            status_line, _, rest = raw.partition(b"\r\n")
            status = int(status_line.split()[1])
            fields = {k.strip().lower(): v.strip() for k, _, v in
                      (line.partition(b":") for line in rest.split(b"\r\n") if line)}
            if b"content-length" in fields:
                body = await reader.readexactly(int(fields[b"content-length"]))
            elif fields.get(b"transfer-encoding", b"").lower() == b"chunked":
                parts = []
                while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                    parts.append(await reader.readexactly(size + 2))
                await reader.readuntil(b"\r\n")
                body = b"".join(p[:-2] for p in parts)
            else:
                body = await reader.read()
            if fields.get(b"connection", b"").lower() == b"close":
                self._discard(writer)
            else:
                self.idle.put_nowait((reader, writer))
            return status, body
        except BaseException:  # a timeout (cancelled) or a broken connection: never reuse it
            self._discard(writer)
            raise

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()


async def _one(client: _Http, owner: _Owner, kind: str, path: str, due: float,
               out: list[_Sample], timeout_s: float) -> None:
    lag = time.perf_counter() - due
    try:
        status, body = await asyncio.wait_for(client.get(path, owner.headers), timeout_s)
        if status == 200 and kind == "search_trials":
            known = set(owner.trials)
            owner.trials += [t["id"] for t in json.loads(body)["data"] if t["id"] not in known]
        outcome = ("ok" if status < 400 else "5xx" if status >= 500 else
                   "429" if status == 429 else f"4xx:{status}")
    except (asyncio.TimeoutError, TimeoutError):
        outcome = "timeout"
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        outcome = f"connect:{type(exc).__name__}"
    out.append(_Sample(kind, time.perf_counter() - due, lag, outcome))


async def open_loop_reads(url: str, owners: list[_Owner], *, rate: float, duration_s: float,
                          timeout_s: float, seed: int) -> tuple[list[_Sample], float]:
    """Send ``rate * duration_s`` reads on a fixed schedule; returns samples and wall time."""
    rng = random.Random(seed)
    weights = [w for w, _ in READ_MIX]
    kinds = [k for _, k in READ_MIX]
    n = int(rate * duration_s)
    samples: list[_Sample] = []
    parsed = httpx.URL(url)
    client = _Http(parsed.host, int(parsed.port or 80), max_connections=256)
    try:
        t0 = time.perf_counter() + 0.2
        tasks = []
        for i in range(n):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            owner = owners[i % len(owners)]
            kind = rng.choices(kinds, weights)[0]
            tasks.append(asyncio.create_task(
                _one(client, owner, kind, _path(kind, owner, rng), due, samples, timeout_s)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    finally:
        await client.close()
    return samples, wall


# --------------------------------------------------------------------------- searches


async def submit_searches(url: str, owners: list[_Owner], per_owner: int,
                          spec: dict[str, Any]) -> None:
    """Every owner's searches at once (concurrent POSTs), ids recorded on the owners."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for owner in owners:  # each owner's copy of the built-in, as a client would first
            response = await client.post("/datasets/builtin", json={"builtin": spec["dataset"]},
                                         headers=owner.headers)
            if response.status_code not in (200, 201, 409):
                raise RuntimeError(f"registering {spec['dataset']} for {owner.name} failed: "
                                   f"{response.status_code} {response.text[:300]}")

        async def submit(owner: _Owner, j: int) -> None:
            body = {**spec, "name": f"load {owner.name} #{j}", "seed": j}
            response = await client.post("/searches", json=body, headers=owner.headers)
            if response.status_code != 201:
                raise RuntimeError(f"submitting a search for {owner.name} failed: "
                                   f"{response.status_code} {response.text[:300]}")
            owner.searches.append(int(response.json()["id"]))

        await asyncio.gather(*(submit(o, j) for o in owners for j in range(per_owner)))


def wait_searches(url: str, owners: list[_Owner], timeout_s: float) -> dict[int, str]:
    """Poll until every search is finished (or the timeout); returns each one's state."""
    end = time.monotonic() + timeout_s
    states: dict[int, str] = {}
    while True:
        for owner in owners:
            for sid in owner.searches:
                if states.get(sid) not in TERMINAL:
                    states[sid] = httpx.get(f"{url}/searches/{sid}", headers=owner.headers,
                                            timeout=30).json()["state"]
        if all(s in TERMINAL for s in states.values()) or time.monotonic() > end:
            return states
        time.sleep(1.0)


# --------------------------------------------------------------------------- the whole run


def _ms(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q) * 1000) if values.size else float("nan")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (Linux /proc; 0.0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _api_cpu_by_process(serve_pid: int) -> dict[int, float]:
    """CPU seconds of each API process: ``serve`` itself and its uvicorn worker children
    (not the runner)."""
    out = {serve_pid: _cpu_s(serve_pid)}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != serve_pid:
                continue
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"search.coordinator.runner" not in cmdline:
            out[int(stat.parent.name)] = _cpu_s(int(stat.parent.name))
    return out


def _api_cpu_s(serve_pid: int) -> float:
    """CPU seconds of the API, all its processes together."""
    return sum(_api_cpu_by_process(serve_pid).values())


def report(samples: list[_Sample], wall_s: float, config: LoadConfig, states: dict[int, str],
           done_s: float, api_cpu_s: float = 0.0, client_cpu_s: float = 0.0) -> LoadReport:
    """Percentiles over every read (errors included: a timeout is a slow answer too)."""
    lat = np.array([s.latency_s for s in samples])
    errors = Counter(s.outcome for s in samples if s.outcome != "ok")
    by_kind: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        by_kind[s.kind].append(s.latency_s)
    return LoadReport(
        requests=len(samples), ok=sum(s.outcome == "ok" for s in samples), errors=dict(errors),
        p50_ms=_ms(lat, 50), p95_ms=_ms(lat, 95), p99_ms=_ms(lat, 99),
        max_ms=float(lat.max() * 1000) if lat.size else float("nan"),
        mean_ms=float(lat.mean() * 1000) if lat.size else float("nan"),
        target_rps=config.rate, achieved_rps=len(samples) / wall_s if wall_s else 0.0,
        duration_s=wall_s,
        max_start_lag_ms=max((s.start_lag_s for s in samples), default=0.0) * 1000,
        api_cpu_ms_per_read=api_cpu_s * 1000 / max(1, len(samples)),
        client_cpu_ms_per_read=client_cpu_s * 1000 / max(1, len(samples)),
        load_average=[round(x, 2) for x in os.getloadavg()],
        per_kind_p95_ms={k: _ms(np.array(v), 95) for k, v in sorted(by_kind.items())},
        per_kind_count={k: len(v) for k, v in sorted(by_kind.items())},
        searches=len(states), search_states=dict(Counter(states.values())),
        searches_done_s=done_s, cpu_count=os.cpu_count() or 1, config=asdict(config),
    )


def _say(message: str) -> None:
    print(f"[load {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` in a thread of its own: the caller's thread may already run an
    event loop (under pytest, Playwright's sync API leaves one in the main thread)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def run_load(config: LoadConfig, home: Path | None = None,
             artifact: Path | None = ARTIFACT) -> LoadReport:
    """Start the service, make the owners' keys, submit the searches, read, wait; report."""
    tmp = None
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix="actsearch-load-")
        home = Path(tmp.name)
    try:
        names = [f"owner{i + 1}" for i in range(config.owners)]
        keys = make_keys(home, names)
        with running_service(home, runner_workers=config.runner_workers,
                             api_workers=config.api_workers,
                             extra_env=config.service_env) as service:
            owners = [_Owner(n, {"Authorization": f"Bearer {keys[n]}"}, []) for n in names]
            submitted = time.monotonic()
            run_async(submit_searches(service.url, owners, config.searches_per_owner,
                                        config.search))
            _say(f"{sum(len(o.searches) for o in owners)} searches submitted; reading at "
                 f"{config.rate:g}/s for {config.duration_s:g} s")
            per0, client0 = _api_cpu_by_process(service.proc.proc.pid), time.process_time()
            samples, wall = run_async(open_loop_reads(
                service.url, owners, rate=config.rate, duration_s=config.duration_s,
                timeout_s=config.request_timeout_s, seed=config.seed))
            per = _api_cpu_by_process(service.proc.proc.pid)
            busy = {pid: per[pid] - per0.get(pid, 0.0) for pid in per}
            api_cpu = sum(busy.values())
            client_cpu = time.process_time() - client0
            _say(f"{len(samples)} reads done in {wall:.1f} s; waiting for the searches")
            states = wait_searches(service.url, owners, config.complete_timeout_s)
            done_s = time.monotonic() - submitted
            _say(f"searches finished: {dict(Counter(states.values()))} after {done_s:.1f} s")
            result = report(samples, wall, config, states, done_s, api_cpu, client_cpu)
            # how evenly the reads spread over the API processes (serve's own first)
            result.api_cpu_share = [round(busy[pid] / max(api_cpu, 1e-9), 3)
                                    for pid in sorted(busy) if busy[pid] > 0.05]
            if any(s != "complete" for s in states.values()):
                print(service.log_tail())
    finally:
        if tmp is not None:
            tmp.cleanup()
    if artifact is not None:
        artifact.parent.mkdir(parents=True, exist_ok=True)
        artifact.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


# --------------------------------------------------------------------------- one owner stalls


@dataclass
class StallConfig:
    """One owner floods slow operations while another owner reads (issue #17, item 2)."""

    attackers: int = 48  # concurrent built-in generation requests, retried as soon as answered
    builtin: str = "mnist1d"
    rate: float = 20.0  # the reads of the others: /health and the victim's search
    duration_s: float = 30.0
    request_timeout_s: float = 30.0
    seed: int = 0


@dataclass
class StallReport:
    health_p50_ms: float
    health_p95_ms: float
    victim_read_p50_ms: float
    victim_read_p95_ms: float
    max_ms: float
    reads: int
    read_errors: dict[str, int]
    attack: dict[str, int]  # status -> count of the attacker's answers
    load_average: list[float]
    config: dict[str, Any]

    def summary(self) -> str:
        return (f"under attack ({self.config['attackers']} concurrent {self.config['builtin']} "
                f"generations from one owner; its answers {self.attack}): /health p50 "
                f"{self.health_p50_ms:.0f} ms p95 {self.health_p95_ms:.0f} ms; another owner's "
                f"GET /searches/{{id}} p50 {self.victim_read_p50_ms:.0f} ms p95 "
                f"{self.victim_read_p95_ms:.0f} ms; max {self.max_ms:.0f} ms over {self.reads} "
                f"reads, errors {self.read_errors or 'none'}; load {self.load_average}")


async def _attack(url: str, headers: dict[str, str], config: StallConfig,
                  stop: asyncio.Event) -> Counter[str]:
    """``attackers`` requests in flight at all times, each resent as soon as it is answered
    (after 0.1 s: a refusal is cheap, and a client spinning on the same 2 cores would
    measure its own CPU use instead of the server's)."""
    outcomes: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=config.attackers + 4)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(i: int) -> None:
            n = 0
            while not stop.is_set():
                n += 1
                body = {"builtin": config.builtin, "name": f"flood-{i}",
                        "options": {"seed": 1000 * i + n}}
                try:
                    response = await client.post("/datasets/builtin", json=body, headers=headers)
                    outcomes[str(response.status_code)] += 1
                except httpx.HTTPError as exc:
                    outcomes[type(exc).__name__] += 1
                await asyncio.sleep(0.1)

        await asyncio.gather(*(one(i) for i in range(config.attackers)))
    return outcomes


async def _stall_reads(url: str, victim: _Owner, config: StallConfig
                       ) -> list[_Sample]:
    parsed = httpx.URL(url)
    client = _Http(parsed.host, int(parsed.port or 80), max_connections=64)
    samples: list[_Sample] = []
    sid = victim.searches[0]
    try:
        t0 = time.perf_counter() + 0.2
        tasks = []
        for i in range(int(config.rate * config.duration_s)):
            due = t0 + i / config.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            kind, path = ("health", "/health") if i % 2 == 0 else ("search", f"/searches/{sid}")
            tasks.append(asyncio.create_task(
                _one(client, victim, kind, path, due, samples, config.request_timeout_s)))
        await asyncio.gather(*tasks)
    finally:
        await client.close()
    return samples


def _attack_process(url: str, headers: dict[str, str], config: StallConfig, seconds: float,
                    out: Any) -> None:
    """The attacker in a process of its own: sharing the readers' event loop, its client's
    CPU would delay their requests and be measured as the server's latency."""

    async def main() -> Counter[str]:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(seconds, stop.set)
        return await _attack(url, headers, config, stop)

    out.put(dict(asyncio.run(main())))


def _stall(url: str, attacker: _Owner, victim: _Owner,
           config: StallConfig) -> tuple[list[_Sample], Counter[str]]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    proc = ctx.Process(target=_attack_process, daemon=True,
                       args=(url, attacker.headers, config, config.duration_s + 3.0, out))
    proc.start()
    try:
        time.sleep(3.0)  # the attacker's start-up, then its flood fills every slot
        samples = run_async(_stall_reads(url, victim, config))
        attack = Counter(out.get(timeout=config.request_timeout_s + 60))
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
    return samples, attack


def run_stall(config: StallConfig, home: Path | None = None) -> StallReport:
    """Start the service (auth on), flood it from one owner, measure another owner's reads."""
    tmp = None
    if home is None:
        tmp = tempfile.TemporaryDirectory(prefix="actsearch-stall-")
        home = Path(tmp.name)
    try:
        keys = make_keys(home, ["attacker", "victim"])
        with running_service(home) as service:
            attacker, victim = (_Owner(n, {"Authorization": f"Bearer {keys[n]}"}, [])
                                for n in ("attacker", "victim"))
            run_async(submit_searches(service.url, [victim], 1, TINY_SEARCH))
            _say(f"flooding with {config.attackers} {config.builtin} generations; reading at "
                 f"{config.rate:g}/s for {config.duration_s:g} s")
            samples, attack = _stall(service.url, attacker, victim, config)
    finally:
        if tmp is not None:
            tmp.cleanup()
    health = np.array([s.latency_s for s in samples if s.kind == "health"])
    search = np.array([s.latency_s for s in samples if s.kind == "search"])
    every = np.array([s.latency_s for s in samples])
    return StallReport(
        health_p50_ms=_ms(health, 50), health_p95_ms=_ms(health, 95),
        victim_read_p50_ms=_ms(search, 50), victim_read_p95_ms=_ms(search, 95),
        max_ms=float(every.max() * 1000) if every.size else float("nan"), reads=len(samples),
        read_errors=dict(Counter(s.outcome for s in samples if s.outcome != "ok")),
        attack=dict(attack), load_average=[round(x, 2) for x in os.getloadavg()],
        config=asdict(config))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="reads per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of reads")
    parser.add_argument("--owners", type=int, default=5)
    parser.add_argument("--searches-per-owner", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ARTIFACT, help="JSON figures")
    parser.add_argument("--stall", action="store_true",
                        help="instead: one owner floods built-in generation while another "
                             "reads (/health and its search); prints their latency")
    args = parser.parse_args(argv)
    if args.stall:
        stall = run_stall(StallConfig(duration_s=args.duration))
        print(stall.summary())
        return 0
    result = run_load(LoadConfig(rate=args.rate, duration_s=args.duration, owners=args.owners,
                                 searches_per_owner=args.searches_per_owner), artifact=args.out)
    print(result.summary())
    print("p95 per read kind (ms): " + ", ".join(f"{k} {v:.0f}"
                                                 for k, v in result.per_kind_p95_ms.items()))
    print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
