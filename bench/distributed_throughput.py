"""Trials per minute of the distributed mode with one and with two workers, in one run.

Starts a private redis-server and PostgreSQL (as the integration tests do), then:

1. one ``actsearch worker`` (one torch thread): a warm-up search (so the
   child's torch import is not timed), then the measured search;
2. a second worker joins: warm-up again, then the same search spec again.

Each search's analysis (fits, distillation: a task on a worker) is waited for before the
next search starts, so the measured one finds every worker idle.

Throughput is search-phase trials per minute, from the search's start to its
last search population's end (database timestamps), plus the end-to-end time
including finalists and the test score. Same machine, same run, same spec.

The measured search trains mixed populations (8 families, fixed and trainable, with the
K the planner gives; ``--k`` forces a population size), as ``actsearch search`` does.

    python bench/distributed_throughput.py [--trials 64] [--epochs 10] [--k K]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.utils.servers import servers, start_service, wait_for  # noqa: E402


def _env(redis_url: str, pg_url: str, home: Path) -> dict[str, str]:
    return {
        "ACTSEARCH_HOME": str(home), "ACTSEARCH_DATABASE_URL": pg_url,
        "ACTSEARCH_BROKER_URL": redis_url, "ACTSEARCH_TORCH_THREADS": "1",
        "OMP_NUM_THREADS": "1", "ACTSEARCH_WORKER__RECONCILE_INTERVAL_S": "5",
        "ACTSEARCH_WORKER__HEARTBEAT_INTERVAL_S": "2", "ACTSEARCH_WORKER__STALE_AFTER_S": "60",
    }


def _run_search(sessions: Any, url: str, spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    from search.service import create_search
    from search.spec import SearchSpec
    from store import repo
    from worker.enqueue import submit_search

    with sessions.begin() as session:
        search_id = create_search(session=session, spec=SearchSpec(**spec), storage_url=url).id
    t0 = time.time()
    submit_search(search_id)

    def done() -> bool:
        with sessions() as session:
            return repo.get_search(session, search_id=search_id).state in (
                "complete", "failed", "cancelled")

    if not wait_for(done, timeout_s, 0.5):
        raise RuntimeError(f"search {search_id} did not finish in {timeout_s}s")
    wall = time.time() - t0

    def analysed() -> bool:  # its analysis task holds a worker: the next search waits for it
        with sessions() as session:
            return repo.get_search(session, search_id=search_id).analysis_state in (
                "done", "failed", None)

    wait_for(analysed, timeout_s, 0.5)
    with sessions() as session:
        search = repo.get_search(session, search_id=search_id)
        pops = repo.list_populations(session, search_id=search_id)
        n_trials = repo.count_trials(session, search_id=search_id, phase="search")
        search_pops = [p for p in pops if p.phase == "search"]
        start = min(p.started_at for p in search_pops if p.started_at)
        end = max(p.finished_at for p in search_pops if p.finished_at)
        workers = sorted({(p.worker or "").split("@")[0] for p in search_pops})
        ks = [(p.k, len(set(p.slot_families()))) for p in search_pops]
        state = search.state
    phase_s = (end - start).total_seconds()
    return {"search_id": search_id, "state": state, "trials": n_trials, "search_phase_s": phase_s,
            "trials_per_min": 60.0 * n_trials / phase_s, "end_to_end_s": wall, "workers": workers,
            "populations": ks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--k", type=int, default=None, help="population size (default: the planner's)")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--arch", default="mlp:64,64")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    spec = {"dataset": args.dataset, "architecture": args.arch,
            "families": ["relu", "tanh", "gelu", "silu", "elu", "prelu", "rational", "vaf"],
            "allocation": "equal", "trials": args.trials, "epochs": args.epochs,
            "finalist_seeds": 3, "batch_size": 32, "pruner": "none",
            **({"population_size": args.k} if args.k else {})}
    warmup = {"dataset": "iris", "architecture": "mlp:8", "families": ["relu"], "trials": 4,
              "epochs": 1, "population_size": 1, "finalist_seeds": 1}

    with servers() as (redis_server, pg), tempfile.TemporaryDirectory() as tmp:
        env = _env(redis_server.url, pg.url, Path(tmp))
        os.environ.update(env)
        from store.db import init_db, make_engine, session_factory

        init_db(pg.url)
        sessions = session_factory(make_engine(pg.url))
        procs = []
        try:
            results = {}
            for n in (1, 2):
                procs.append(start_service(f"w{n}", ["worker", "--hostname", f"w{n}@%h",
                                                     "--loglevel", "warning"], env, Path(tmp)))
                if len(procs) == 1:
                    procs.append(start_service("beat", ["beat", "--loglevel", "warning"], env,
                                               Path(tmp)))
                _run_search(sessions, pg.url, warmup, args.timeout)
                if n == 2:  # make sure the new worker's child has imported torch too
                    _run_search(sessions, pg.url, warmup, args.timeout)
                results[n] = _run_search(sessions, pg.url, spec, args.timeout)
                r = results[n]
                print(f"{n} worker(s): {r['trials']} trials, search phase {r['search_phase_s']:.1f}s "
                      f"-> {r['trials_per_min']:.1f} trials/min; end to end {r['end_to_end_s']:.1f}s "
                      f"(state {r['state']}, workers {r['workers']}; populations (K, families) "
                      f"{r['populations']})", flush=True)
            print(f"speed-up with 2 workers: {results[2]['trials_per_min'] / results[1]['trials_per_min']:.2f}x "
                  f"(search phase), {results[1]['end_to_end_s'] / results[2]['end_to_end_s']:.2f}x "
                  f"(end to end); cores: {os.cpu_count()}")
        finally:
            for proc in procs:
                proc.signal_stop()
            for proc in procs:
                proc.stop()


if __name__ == "__main__":
    main()
