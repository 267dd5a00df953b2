"""Where a stage's per-row function runs: in this process, a local process pool, or Ray tasks.

Every engine yields results in input order (a row finished early waits in a small buffer until
the rows before it are done), so the output and its resume prefix do not depend on the engine or
the worker count. At most ``workers * IN_FLIGHT_PER_WORKER`` rows are submitted at once, which
bounds the buffer. Scheduling itself is left to ``concurrent.futures`` and Ray.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import opensora
import training
from opensora.errors import UserError
from training.curation.stage import ItemResult
from training.curation.table import Row

ENGINES = ("local", "ray")
IN_FLIGHT_PER_WORKER = 4
# Pool workers are forked from a fresh server process with these imported, not from this process:
# a fork of a process whose OpenCV thread pool has run deadlocks in the child's first OpenCV call.
WORKER_PRELOAD = ["training.curation." + name for name in ("probe", "scenes", "motion", "ocr", "aesthetic", "caption")]

# Threads each worker may use for OpenCV / onnxruntime / torch; set once per worker process.
_worker_threads = 0  # 0: the library's default (all cores)


def worker_threads() -> int:
    return _worker_threads


def _init_worker(threads: int) -> None:
    global _worker_threads
    _worker_threads = threads
    import cv2

    cv2.setNumThreads(threads or -1)  # -1: OpenCV's default


def run_item(process: Callable[[Row, Any], ItemResult], row: Row, config: Any, threads: int) -> ItemResult:
    """One row in a Ray worker (which has no pool initializer)."""
    if _worker_threads != threads:
        _init_worker(threads)
    return process(row, config)


def threads_per_worker(workers: int) -> int:
    return 0 if workers <= 1 else max(1, (os.cpu_count() or 1) // workers)


def check_engine(workers: int, engine: str) -> None:
    if workers < 1:
        raise UserError(f"--workers is {workers}; must be >= 1")
    if engine not in ENGINES:
        raise UserError(f"--engine is {engine!r}; allowed: {', '.join(ENGINES)}")


def ordered_results(
    process: Callable[[Row, Any], ItemResult],
    rows: Sequence[Row],
    config: Any,
    workers: int,
    engine: str = "local",
    ray_address: str | None = None,
) -> Iterator[ItemResult]:
    check_engine(workers, engine)
    if engine == "ray":
        yield from _ray(process, rows, config, workers, ray_address)
    elif workers == 1:
        _init_worker(0)
        for row in rows:
            yield process(row, config)
    else:
        yield from _pool(process, rows, config, workers)


def _in_order(submit: Callable[[int], Any], wait_one: Callable[[set], tuple[Any, ItemResult]],
              count: int, window: int) -> Iterator[ItemResult]:
    """Keep ``window`` rows in flight; yield finished results in input order."""
    pending: dict[Any, int] = {}
    finished: dict[int, ItemResult] = {}
    next_submit = next_yield = 0
    while next_yield < count:
        while next_submit < count and len(pending) < window:
            pending[submit(next_submit)] = next_submit
            next_submit += 1
        handle, result = wait_one(set(pending))
        finished[pending.pop(handle)] = result
        while next_yield in finished:
            yield finished.pop(next_yield)
            next_yield += 1


def _pool(process, rows, config, workers) -> Iterator[ItemResult]:
    threads = threads_per_worker(workers)
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_PRELOAD)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                                initargs=(threads,)) as pool:

        def wait_one(futures: set) -> tuple[Any, ItemResult]:
            done, _ = concurrent.futures.wait(futures, return_when=concurrent.futures.FIRST_COMPLETED)
            future = next(iter(done))
            return future, future.result()

        try:
            yield from _in_order(lambda i: pool.submit(process, rows[i], config), wait_one, len(rows),
                                 workers * IN_FLIGHT_PER_WORKER)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


@contextlib.contextmanager
def ray_session(workers: int, address: str | None) -> Iterator[None]:
    """Connect to the cluster at ``address``, or start a local one of ``workers`` CPUs; a session
    that is already open (a whole chain shares one) is reused and left open."""
    import ray  # only here: its import and cluster start cost seconds

    if ray.is_initialized():
        yield
        return
    options = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
    # The stage functions live in this checkout's packages: Ray ships them to every worker, on
    # this machine or a cluster's (which needs the requirements installed, not the checkout).
    packages = [str(Path(module.__file__).parent) for module in (opensora, training)]
    try:
        ray.init(**options, runtime_env={"py_modules": packages, "excludes": ["__pycache__"]},
                 log_to_driver=False, configure_logging=False)
    except ConnectionError as e:
        raise UserError(f"cannot connect to the Ray cluster at --ray-address {address}: {e}") from e
    try:
        yield
    finally:
        ray.shutdown()


def _ray(process, rows, config, workers, address) -> Iterator[ItemResult]:
    with ray_session(workers, address):
        import ray

        remote = ray.remote(num_cpus=1)(run_item)
        threads = 0 if address else threads_per_worker(workers)  # a cluster's machines: their own default
        config_ref = ray.put(config)

        def wait_one(refs: set) -> tuple[Any, ItemResult]:
            done, _ = ray.wait(list(refs), num_returns=1)
            return done[0], ray.get(done[0])

        yield from _in_order(lambda i: remote.remote(process, rows[i], config_ref, threads), wait_one, len(rows),
                             workers * IN_FLIGHT_PER_WORKER)
