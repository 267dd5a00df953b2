"""The persistent job queue (#31.1): file states under concurrent processes, order, cancel, and a
runner killed with -9 whose job runs again exactly once."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from opensora.errors import UserError
from opensora.generation_settings import GenerationRequest, resolve_settings
from opensora.job_queue import JobQueue
from opensora.presets import load_preset


def settings(prompt="a cat", seed=1, **values) -> dict:
    request = GenerationRequest(prompt=prompt, seed=seed, **{"num_frames": 5, "num_steps": 2, **values})
    return resolve_settings(request, load_preset("tiny-random")).to_dict()


def test_order_move_up_cancel_remove(tmp_path):
    queue = JobQueue(tmp_path)
    a, b, c = (queue.add("tiny-random", settings(p)) for p in ("a", "b", "c"))
    assert [j.id for j in queue.jobs()] == [a.id, b.id, c.id]
    queue.move_up(c.id)
    assert [queue.position(j) for j in (a.id, c.id, b.id)] == [1, 2, 3]
    assert queue.cancel(b.id).state == "cancelled" and queue.position(b.id) is None
    running = queue.claim_next()
    assert running.id == a.id and running.state == "running" and running.pid == os.getpid()
    with pytest.raises(UserError, match="is running: cancel it first"):
        queue.remove(a.id)
    assert queue.cancel(a.id).cancel_requested and queue.cancel_requested(a.id)
    queue.remove(b.id)
    assert {j.id for j in queue.jobs()} == {a.id, c.id}
    with pytest.raises(UserError, match="not in the queue"):
        queue.get(b.id)
    assert "a · t2v · 5 frames 64x32 · 2 steps · seed 1" in c.summary or "seed 1" in a.summary


ADD_AND_CANCEL = textwrap.dedent("""
    import sys
    from opensora.job_queue import JobQueue
    queue = JobQueue(sys.argv[1])
    name = sys.argv[2]
    for i in range(15):
        job = queue.add("tiny-random", {"prompt": f"{name} {i}", "num_steps": 2, "num_samples": 1})
        if i % 3 == 0:
            queue.cancel(job.id)
""")

CLAIM_ALL = textwrap.dedent("""
    import sys
    from opensora.job_queue import JobQueue
    queue = JobQueue(sys.argv[1])
    claimed = []
    while (job := queue.claim_next()) is not None:
        claimed.append(job.id)
        queue.finish(job.id, "done")
    print(" ".join(claimed))
""")


def test_two_processes_adding_cancelling_and_claiming(tmp_path):
    """Every add lands once with its own place; two runners never claim the same job."""
    adders = [subprocess.Popen([sys.executable, "-c", ADD_AND_CANCEL, str(tmp_path), n], cwd=REPO)
              for n in ("alpha", "beta")]
    assert [p.wait(timeout=120) for p in adders] == [0, 0]
    queue = JobQueue(tmp_path)
    jobs = queue.jobs()
    assert len(jobs) == 30 and len({j.order for j in jobs}) == 30
    assert sum(j.state == "cancelled" for j in jobs) == 10
    assert {j.settings["prompt"] for j in jobs} == {f"{n} {i}" for n in ("alpha", "beta") for i in range(15)}

    runners = [subprocess.Popen([sys.executable, "-c", CLAIM_ALL, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                                text=True) for _ in range(2)]
    claimed = [p.communicate(timeout=120)[0].split() for p in runners]
    assert not set(claimed[0]) & set(claimed[1])
    assert sorted(claimed[0] + claimed[1]) == sorted(j.id for j in jobs if j.state == "queued")
    assert all(j.state in ("done", "cancelled") for j in queue.jobs())


KILLED_RUNNER = textwrap.dedent("""
    import os, signal, sys
    import opensora.runner as runner
    from opensora.job_queue import JobQueue
    from opensora.pipeline_cache import PipelineCache
    from opensora.queue_worker import QueueWorker

    real = runner.run_job
    def run_then_die(*args, **kwargs):
        real(*args, **kwargs)  # the job's videos are written...
        os.kill(os.getpid(), signal.SIGKILL)  # ...and the runner dies before it records them
    runner.run_job = run_then_die
    QueueWorker(JobQueue(sys.argv[1]), PipelineCache("ckpts", "cpu", "fp32")).run_one()
""")


def test_a_killed_runners_job_runs_again_exactly_once(tmp_path):
    from opensora.io.outputs import list_outputs
    from opensora.pipeline_cache import PipelineCache
    from opensora.queue_worker import QueueWorker

    queue = JobQueue(tmp_path)
    job = queue.add("tiny-random", settings("killed", seed=3, num_samples=2))
    proc = subprocess.run([sys.executable, "-c", KILLED_RUNNER, str(tmp_path)], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    assert queue.get(job.id).state == "running" and len(list_outputs(tmp_path)) == 2  # partial outputs

    worker = QueueWorker(queue, PipelineCache("ckpts", "cpu", "fp32"))
    assert [j.id for j in queue.recover()] == [job.id]
    assert queue.get(job.id).state == "queued" and list_outputs(tmp_path) == []  # discarded
    assert worker.run_one().state == "done" and worker.run_one() is None
    done = queue.get(job.id)
    outputs = list_outputs(tmp_path)
    assert done.runs == 2 and sorted(done.outputs) == sorted(e["path"].name for e in outputs) and len(outputs) == 2
    assert [json.loads(e["path"].with_suffix(".json").read_text())["seed"] for e in reversed(outputs)] == [3, 4]
    rows = (tmp_path / "results.csv").read_text().splitlines()[1:]
    assert len(rows) == 2  # the first run's rows went with its videos


def test_recover_leaves_a_live_runners_job_alone(tmp_path):
    queue = JobQueue(tmp_path)
    job = queue.add("tiny-random", settings())
    queue.claim_next(pid=1)  # pid 1 (init) is alive
    assert queue.recover() == [] and queue.get(job.id).state == "running"


def test_etas_follow_measured_step_times(tmp_path):
    queue = JobQueue(tmp_path)
    first = queue.add("tiny-random", settings("first", num_steps=4))
    second = queue.add("tiny-random", settings("second", num_steps=6))
    assert queue.etas() == {first.id: None, second.id: None}  # nothing measured yet
    done = queue.add("tiny-random", settings("done"))
    queue.move_up(done.id)
    queue.move_up(done.id)
    queue.claim_next()
    queue.finish(done.id, "done", seconds_per_step=0.5)
    assert queue.etas() == {first.id: 2.0, second.id: 5.0}
