"""`python -m opensora queue add|run|list` (#31.1): jobs added from a shell land in the app's queue,
run headless through the same runner (videos + sidecars + results.csv that History reads), a job
added by the app and one added by the CLI each run exactly once, bad values are refused before
any model loads, and Ctrl-C puts the running job back in the queue."""

import signal
import subprocess
import sys
import time

import av
import pytest

from conftest import REPO
from opensora.cli import main
from opensora.generation_settings import GenerationRequest
from opensora.job_queue import JobQueue

TINY = ["--preset", "tiny-random", "--num-steps", "2"]


def add(out, *args) -> int:
    return main(["queue", "add", *TINY, "--output-dir", str(out), *args])


def frame_count(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def test_add_two_list_and_run_makes_two_videos(tmp_path, capsys):
    from app.tab_history import history_page

    out = tmp_path / "out"
    assert add(out, "--prompt", "a red cat", "--num-frames", "5", "--seed", "7") == 0
    assert add(out, "--prompt", "a blue dog", "--num-frames", "9") == 0
    added = capsys.readouterr().out.splitlines()
    assert [line.split()[1:3] for line in added] == [["position", "1"], ["position", "2"]]
    ids = [line.split()[0] for line in added]

    assert main(["queue", "list", "--output-dir", str(out)]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].split() == ["ID", "STATE", "POS", "PRESET", "PROMPT"]
    assert [line.split()[:4] for line in listing[1:]] == [[ids[0], "queued", "1", "tiny-random"],
                                                         [ids[1], "queued", "2", "tiny-random"]]
    assert listing[1].endswith("a red cat") and listing[2].endswith("a blue dog")

    assert main(["queue", "run", "--output-dir", str(out)]) == 0
    ran = capsys.readouterr()
    assert [line.split()[:2] for line in ran.out.splitlines()] == [[ids[0], "done"], [ids[1], "done"]]
    assert "2 jobs run, 2 done; 0 waiting" in ran.err

    jobs = {job.id: job for job in JobQueue(out).jobs()}
    assert [(jobs[i].state, jobs[i].runs, len(jobs[i].outputs)) for i in ids] == [("done", 1, 1)] * 2
    assert [frame_count(out / jobs[i].outputs[0]) for i in ids] == [5, 9]
    assert jobs[ids[0]].settings["seed"] == 7
    page = history_page(out, 24)  # the app's History reads what the runner wrote
    assert [caption for _, caption in page.items] == ["#0001 · t2v · a blue dog", "#0000 · t2v · a red cat"]
    assert len((out / "results.csv").read_text().splitlines()) == 3


def test_an_app_job_and_a_cli_job_each_run_exactly_once(tmp_path, capsys):
    """The app's Generate path (GenerateHandler.submit) and `queue add` write one queue; `queue run` in
    another process and the app's worker run it together: every job once, never twice."""
    from PIL import Image

    from app.config import AppConfig
    from app.generate_handler import GenerateHandler
    from opensora.io.outputs import list_outputs
    from opensora.pipeline_cache import PipelineCache
    from opensora.queue_worker import QueueWorker

    out = tmp_path / "out"
    config = AppConfig(output_dir=out, runs_dir=tmp_path / "runs", preset="tiny-random")
    cache = PipelineCache(config.ckpt_dir, "cpu", "fp32")
    queue = JobQueue(out)
    worker = QueueWorker(queue, cache)
    handler = GenerateHandler(config, cache, queue, worker)
    app_job = handler.submit(GenerationRequest("from the app", preset="tiny-random", num_frames=5, num_steps=12),
                             "a-session")
    image = tmp_path / "ref.png"
    Image.new("RGB", (64, 32), (200, 0, 0)).save(image)
    assert add(out, "--prompt", "from the cli", "--num-frames", "5", "--cond-type", "i2v_head",
               "--ref", str(image)) == 0
    cli_id = capsys.readouterr().out.split()[0]
    reference = queue.get(cli_id).settings["reference"][0]
    assert reference.startswith(str(out / "references")) and image.read_bytes() == open(reference, "rb").read()

    runner = subprocess.Popen([sys.executable, "-m", "opensora", "queue", "run", "--output-dir", str(out),
                               "--device", "cpu"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # (SIG_DFL: a terminal's Ctrl-C; the suite's process may be ignoring SIGINT by now, and a child
    # inherits that, so Python would install no KeyboardInterrupt handler.)
    try:
        deadline = time.monotonic() + 120
        while queue.get(app_job.id).state == "queued" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert queue.get(app_job.id).pid == runner.pid  # the CLI took the first job...
        worker.start()  # ...and the app's worker starts beside it
        stdout, stderr = runner.communicate(timeout=120)
        deadline = time.monotonic() + 60
        while any(j.state != "done" for j in queue.jobs()) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 0, stderr
    jobs = queue.jobs()
    assert sorted((j.id, j.state, j.runs) for j in jobs) == sorted([(app_job.id, "done", 1), (cli_id, "done", 1)])
    by_cli = {line.split()[0] for line in stdout.splitlines()}
    by_app = set(worker.progress)
    assert app_job.id in by_cli and not by_cli & by_app and by_cli | by_app == {app_job.id, cli_id}
    written = [entry["settings"]["job_id"] for entry in list_outputs(out)]
    assert sorted(written) == sorted([app_job.id, cli_id])  # one video each, in History's listing
    assert len((out / "results.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("args, message", [
    (["--prompt", "a cat", "--num-steps", "0"], "num_steps 0 is out of range: allowed 1 to 500"),
    (["--prompt", "a cat", "--num-frames", "6"], "num_frames 6 is not allowed: use 4k+1 frames between 1 and 129"),
    (["--prompt", "a cat", "--seed", "-1"], "seed -1 is out of range: allowed 0 to 4294967295"),
    (["--csv", "ROWS", "--num-frames", "5"], "rows.csv line 3: seed 'x' is not an integer"),
    (["--csv", "ROWS_PRESET", "--num-frames", "5"], "rows.csv line 3: unknown preset 'no-such-preset'"),
])
def test_bad_values_are_refused_before_any_model_loads(tmp_path, capsys, monkeypatch, args, message):
    def no_loading(*_args, **_kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("opensora.pipeline_cache.PipelineCache.get", no_loading)
    rows = tmp_path / "rows.csv"
    rows.write_text("text,seed,preset\na cat,1,\n" + ("a dog,x,\n" if "ROWS" in args else "a dog,2,no-such-preset\n"))
    args = [str(rows) if a.startswith("ROWS") else a for a in args]
    code = main(["queue", "add", "--preset", "tiny-random", "--output-dir", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert JobQueue(tmp_path / "out").jobs() == []  # nothing added, not even the good row


def test_run_refuses_bad_runtime_flags(tmp_path, capsys):
    assert main(["queue", "run", "--threads", "0", "--output-dir", str(tmp_path)]) == 2
    assert "--threads 0 is out of range: use 1-256" in capsys.readouterr().err
    assert main(["queue", "run", "--device", "tpu", "--output-dir", str(tmp_path)]) == 2
    assert "device 'tpu' is not supported" in capsys.readouterr().err


def test_ctrl_c_puts_the_running_job_back_in_the_queue(tmp_path, capsys):
    out = tmp_path / "out"
    # The demo model, 200 steps (~12 s of steps here): still running 3 s in (tiny-random's 1000 steps were not)
    assert add(out, "--preset", "demo", "--prompt", "a red circle moving right on a black background",
               "--num-steps", "200") == 0
    job_id = capsys.readouterr().out.split()[0]
    queue = JobQueue(out)
    runner = subprocess.Popen([sys.executable, "-m", "opensora", "queue", "run", "--output-dir", str(out),
                               "--device", "cpu"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # (SIG_DFL: a terminal's Ctrl-C; the suite's process may be ignoring SIGINT by now, and a child
    # inherits that, so Python would install no KeyboardInterrupt handler.)
    try:
        deadline = time.monotonic() + 120
        while queue.get(job_id).state != "running" and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # into its steps
        runner.send_signal(signal.SIGINT)
        _, stderr = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.kill()
    assert runner.returncode == 130, stderr
    assert f"interrupted: {job_id} back in the queue" in stderr
    job = queue.get(job_id)
    assert (job.state, job.pid, job.runs, queue.position(job_id)) == ("queued", None, 1, 1)
    assert not list(out.glob("*.mp4"))
