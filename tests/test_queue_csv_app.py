"""The Queue tab's "Add jobs from CSV" (#31.1): rows take the Text → Video form's current settings,
a row's own columns win (a row of another preset gets that preset's defaults), a bad row is named
and adds nothing."""

import pytest

from app.settings_form import REQUEST_FIELDS

FORM = dict(preset="tiny-random", resolution="tiny", aspect_ratio="1:1", num_frames=5, num_steps=3, guidance=6.0,
            guidance_img=2.0, motion_score="4", seed=11, random_seed=False, num_samples=1, refine=False, lora="",
            lora_scale=1.0, lora_2="", lora_scale_2=1.0, lora_3="", lora_scale_3=1.0, speed="quality", compile=False)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    from app.config import AppConfig
    from app.ui import build_app

    tmp = tmp_path_factory.mktemp("queue-csv")
    demo, services = build_app(AppConfig(output_dir=tmp / "out", runs_dir=tmp / "runs", preset="tiny-random"))
    services.worker.stop()  # the jobs stay queued: their settings are what is checked here
    add_csv = next(f.fn for f in demo.fns.values() if f.api_name == "queue-add-csv")
    return add_csv, services.queue


def upload(tmp_path, text: str) -> str:
    path = tmp_path / "jobs.csv"
    path.write_text(text)
    return str(path)


def call(add_csv, path, **form):
    values = {**FORM, **form}
    return add_csv(path, "blurry", False, *(values[name] for name in REQUEST_FIELDS))


def test_rows_take_the_form_settings_and_their_own_columns(app, tmp_path):
    add_csv, queue = app
    before = {job.id for job in queue.jobs()}
    note, _ = call(add_csv, upload(tmp_path, "text,seed,preset\na red cat,,\na blue dog,5,\na square,,demo\n"))
    assert note == "Added 3 jobs from `jobs.csv`."
    jobs = [job for job in queue.jobs() if job.id not in before]
    cat, dog, square = (job.settings for job in jobs)
    assert [job.preset for job in jobs] == ["tiny-random", "tiny-random", "demo"]
    assert (cat["prompt"], cat["num_frames"], cat["num_steps"], cat["guidance"], cat["aspect_ratio"],
            cat["seed"], cat["negative_prompt"]) == ("a red cat", 5, 3, 6.0, "1:1", 11, "blurry")
    assert (dog["seed"], dog["num_steps"]) == (5, 3)  # the row's seed wins
    from opensora.presets import load_preset

    demo = load_preset("demo").sampler
    assert (square["num_steps"], square["num_frames"], square["negative_prompt"]) == (demo.num_steps, demo.num_frames,
                                                                                      "blurry")


@pytest.mark.parametrize("text, message", [
    ("text,seed\na cat,1\na dog,x\n", "Nothing added: jobs.csv line 3: seed 'x' is not an integer"),
    ("text,cond_type\na cat,t2v\na dog,i2v_head\n", "Nothing added: jobs.csv line 3: cond type i2v_head needs a reference"),
    ("text,preset\na cat,\na dog,no-such-preset\n", "Nothing added: jobs.csv line 3: unknown preset 'no-such-preset'"),
    ("prompt\na cat\n", "Nothing added: jobs.csv needs a `text` column"),
])
def test_a_bad_row_is_named_and_nothing_is_added(app, tmp_path, text, message):
    add_csv, queue = app
    before = len(queue.jobs())
    note, _ = call(add_csv, upload(tmp_path, text))
    assert note.startswith(message), note
    assert len(queue.jobs()) == before


def test_no_upload_says_so(app):
    add_csv, _ = app
    assert call(add_csv, None)[0] == "Upload a CSV first."


def test_form_values_out_of_range_are_named(app, tmp_path):
    add_csv, queue = app
    before = len(queue.jobs())
    note, _ = call(add_csv, upload(tmp_path, "text\na cat\n"), num_steps=0)
    assert note == "Nothing added: jobs.csv line 2: num_steps 0 is out of range: allowed 1 to 500"
    assert len(queue.jobs()) == before

