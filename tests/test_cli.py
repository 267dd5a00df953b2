"""`python -m opensora generate / check`: files written, and clear errors with exit code 2."""

import csv
import json
import re

import av
import pytest
from PIL import Image
from safetensors.torch import save_file
import torch

from conftest import run_cli
from opensora.cli import main


def decode(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f for f in container.decode(stream)]
        return frames, stream


def test_generate_tiny_random_writes_mp4_sidecar_and_results(tmp_path):
    out = tmp_path / "out"
    proc = run_cli("generate", "--preset", "tiny-random", "--prompt", "a cat", "--num-frames", "9",
                   "--aspect-ratio", "16:9", "--output-dir", str(out))
    assert proc.returncode == 0, proc.stderr
    frames, stream = decode(out / "0000.mp4")
    assert len(frames) == 9
    assert (frames[0].height, frames[0].width) == (32, 64)  # the tiny preset's 16:9 bucket
    assert stream.codec_context.name == "h264" and frames[0].format.name == "yuv420p"
    sidecar = json.loads((out / "0000.json").read_text())
    assert sidecar["prompt"] == "a cat" and sidecar["num_frames"] == 9 and sidecar["aspect_ratio"] == "16:9"
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert rows == [{"index": "0", "text": "a cat", "seed": str(sidecar["seed"]), "path": "0000.mp4"}]


def test_csv_batch_with_seeds_and_underscore_flags(tmp_path, capsys):
    Image.new("RGB", (64, 64), (0, 200, 0)).save(tmp_path / "first.png")
    table = tmp_path / "prompts.csv"
    table.write_text('text,ref,cond_type,seed\n"a red, round ball",,t2v,5\na green field,first.png,i2v_head,6\n')
    out = tmp_path / "out"
    code = main(["generate", "--preset", "tiny-random", "--csv", str(table), "--num_frames", "5",
                 "--num_steps", "2", "--num_sample", "2", "--output_dir", str(out)])
    assert code == 0
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["text"] for r in rows] == ["a red, round ball"] * 2 + ["a green field"] * 2
    assert [r["seed"] for r in rows] == ["5", "6", "6", "7"]
    assert json.loads((out / "0002.json").read_text())["cond_type"] == "i2v_head"
    for row in rows:
        frames, _ = decode(out / row["path"])
        assert len(frames) == 5


def test_threads_flag_sets_torch_threads(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        code = main(["generate", "--preset", "tiny-random", "--prompt", "a cat", "--num-frames", "5",
                     "--num-steps", "1", "--threads", "1", "--output-dir", str(tmp_path)])
        assert code == 0 and torch.get_num_threads() == 1
        frames, _ = decode(tmp_path / "0000.mp4")
        assert len(frames) == 5
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "a cat", "--num-frames", "10"], "num_frames 10 is not allowed: use 4k+1"),
        (["--prompt", "a cat", "--num-frames", "133"], "num_frames 133"),
        (["--prompt", "a cat", "--aspect-ratio", "5:1"], "unknown aspect ratio '5:1'"),
        (["--prompt", ""], "prompt is empty"),
        (["--prompt", "a cat", "--height", "33", "--width", "64"], "height 33 is not allowed"),
        (["--prompt", "a cat", "--cond-type", "i2v_head", "--ref", "/nonexistent.png"], "/nonexistent.png does not exist"),
        (["--prompt", "a cat", "--cond-type", "v2v_middle"], "unknown cond type 'v2v_middle'"),
        (["--prompt", "a cat", "--motion-score", "99"], "motion score"),
        (["--prompt", "a cat", "--threads", "0"], "--threads 0 is out of range: use 1-256"),
    ],
)
def test_bad_input_exits_2_with_message(tmp_path, capsys, args, message):
    code = main(["generate", "--preset", "tiny-random", "--num-steps", "1", "--output-dir", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_corrupt_reference_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image at all")
    code = main(["generate", "--preset", "tiny-random", "--prompt", "a cat", "--cond-type", "i2v_head",
                 "--ref", str(bad), "--num-steps", "1", "--output-dir", str(tmp_path / "o")])
    assert code == 2 and "bad.jpg" in capsys.readouterr().err


def test_missing_official_files_named_with_check_hint(tmp_path):
    proc = run_cli("generate", "--preset", "opensora-v2-256px", "--prompt", "a cat", "--ckpt-dir", str(tmp_path))
    assert proc.returncode == 2
    for name in ("Open_Sora_v2.safetensors", "hunyuan_vae.safetensors", "google/t5-v1_1-xxl", "openai/clip-vit-large-patch14"):
        assert name in proc.stderr
    assert "python -m opensora check" in proc.stderr and "huggingface-cli download" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_checkpoint_with_wrong_shapes_is_named(tmp_path, capsys):
    ckpt = tmp_path / "ckpts"
    for folder in ("google/t5-v1_1-xxl", "openai/clip-vit-large-patch14"):
        (ckpt / folder).mkdir(parents=True)
        (ckpt / folder / "config.json").write_text("{}")
    # A tiny model saved under the official file name: every shape is wrong for the 11B preset.
    save_file({"img_in.weight": torch.zeros(64, 64), "bogus.weight": torch.zeros(2)}, str(ckpt / "Open_Sora_v2.safetensors"))
    save_file({"encoder.conv_in.conv.weight": torch.zeros(1)}, str(ckpt / "hunyuan_vae.safetensors"))
    code = main(["generate", "--preset", "opensora-v2-256px", "--prompt", "a cat", "--ckpt-dir", str(ckpt)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Open_Sora_v2.safetensors does not match" in err
    assert "img_in.weight [64, 64] (expected [3072, 64])" in err
    assert "unexpected keys: bogus.weight" in err and "missing keys" in err


def test_check_lists_present_and_missing(tmp_path, capsys):
    (tmp_path / "hunyuan_vae.safetensors").write_bytes(b"x")
    code = main(["check", "--ckpt-dir", str(tmp_path), "--preset", "opensora-v2-256px"])
    out = capsys.readouterr().out
    assert code == 1
    # A 1-byte file is there but not usable (#27.9): named as broken, with the reason.
    assert re.search(rf"\[BROKEN\] vae +{re.escape(str(tmp_path / 'hunyuan_vae.safetensors'))}: 1 bytes, too short", out)
    assert re.search(rf"\[MISSING\] mmdit +{re.escape(str(tmp_path / 'Open_Sora_v2.safetensors'))}", out)
    assert "download: huggingface-cli download hpcai-tech/Open-Sora-v2 --local-dir ./ckpts" in out
