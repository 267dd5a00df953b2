"""`python -m opensora generate` on bad input: one clear line and exit 2, before any model loads
(issue #27 item 8, and the CLI points of #29)."""

import subprocess
import sys

import pytest

from conftest import REPO
from opensora.cli import main


def run_generate(capsys, *args) -> tuple[int, str]:
    code = main(["generate", "--preset", "tiny-random", "--num-steps", "1", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("content, message", [
    ("text,seed\n\xe9t\xe9,1\n".encode("latin-1"), "is not UTF-8 text"),
    (b"text,seed\n", "has a header but no rows"),
    (b"", "needs a `text` column"),
    (b"text,seed\na cat,1\n   ,2\n", "line 3: the text is empty"),
    (b"text,seed\na cat,x\n", "line 2: seed 'x' is not an integer"),
    (b"text,num_frames\na cat,10\n", None),  # extra columns are ignored
])
def test_bad_csv_files_are_named_with_the_line(tmp_path, capsys, content, message):
    """#27.8: a non-UTF-8 CSV, a header-only one, an empty text on line N."""
    table = tmp_path / "prompts.csv"
    table.write_bytes(content)
    code, err = run_generate(capsys, "--csv", str(table), "--num-frames", "1", "--output-dir", str(tmp_path / "o"))
    if message is None:
        assert code == 0, err
        return
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing ran


def test_csv_that_is_a_folder(tmp_path, capsys):
    code, err = run_generate(capsys, "--csv", str(tmp_path), "--output-dir", str(tmp_path / "o"))
    assert code == 2 and f"the CSV {tmp_path} is a folder" in err


@pytest.mark.parametrize("args, message", [
    (["--device", "tpu"], "device 'tpu' is not supported: use cpu, cuda or cuda:N"),
    (["--device", "cuda"], "no CUDA GPU is usable here"),
    (["--dtype", "fp8"], "unknown dtype 'fp8'; allowed: fp32, bf16, fp16"),
    (["--width", "64"], "width was given alone: give both height and width"),
    (["--height", "4096", "--width", "4096", "--num-frames", "129"], "is too large for a CPU run"),
])
def test_devices_and_sizes_are_checked_before_loading(tmp_path, capsys, args, message):
    """#27.8: --device cuda on a CPU build, --device tpu, --width alone, a 4096x4096x129 video on a CPU."""
    code, err = run_generate(capsys, "--prompt", "a cat", "--output-dir", str(tmp_path), *args)
    assert code == 2 and message in err and "Traceback" not in err
    assert "preset tiny-random" not in err  # refused before the model line


def test_size_help_names_the_token_size_of_each_family():
    """#27.8: --help said multiples of 16 where the demo needs 32; no doubled aliases (#29)."""
    help_text = subprocess.run([sys.executable, "-m", "opensora", "generate", "--help"], cwd=REPO,
                               capture_output=True, text=True).stdout
    flat = " ".join(help_text.split())
    assert "32 for the demo model" in flat
    assert "--preset PRESET, --preset PRESET" not in flat and "--seed SEED, --seed SEED" not in flat
    assert "--num-frames NUM_FRAMES, --num_frames NUM_FRAMES" in flat


def test_the_error_line_starts_on_its_own_line(tmp_path):
    """#27.8: an error after the progress bar is not glued to it (a video too short for v2v_head
    is found while encoding the reference, after the bar started)."""
    import numpy as np

    from opensora.io.video import write_video

    short = tmp_path / "short.mp4"
    write_video(short, np.zeros((5, 32, 64, 3), np.uint8), fps=8)
    proc = subprocess.run(
        [sys.executable, "-m", "opensora", "generate", "--preset", "tiny-random", "--prompt", "a cat",
         "--cond-type", "v2v_head", "--ref", str(short), "--num-frames", "37",
         "--num-steps", "1", "--output-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert any(line.startswith("error: ") and "at least 33 frames" in line for line in lines), proc.stderr


def test_arguments_are_parsed_before_torch_is_imported():
    """#29: argument errors come at once, not after seconds of imports."""
    probe = ("import sys\nfrom opensora.cli import build_parser\n"
             "build_parser().parse_args(['generate', '--prompt', 'x'])\nprint('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
