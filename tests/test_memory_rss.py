"""Measured in child processes (slow): the disk profile's RSS on a mid-size MMDiT, the planner
against those peaks, and no RSS growth over repeated generations."""

import pytest
from safetensors.torch import load_file

from opensora.memory.probe import run_probe
from test_memory_planner import cpu_prediction

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mid_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mid")
    runs = {}
    for profile in ("none", "disk"):
        out = folder / f"{profile}.safetensors"
        runs[profile] = run_probe("generate", "--config", "mid", "--profile", profile, "--out", str(out))
        runs[profile]["latent"] = load_file(out)["latent"]
    return runs


def test_disk_profile_halves_the_peak_rss_of_a_generation(mid_runs):
    none, disk = mid_runs["none"], mid_runs["disk"]
    print(f"mid generation peak RSS: none {none['peak_run_mib']} MiB, disk {disk['peak_run_mib']} MiB "
          f"(process start {none['rss_start_mib']} MiB; loading peak {none['peak_load_mib']} / {disk['peak_load_mib']} MiB)")
    assert disk["peak_run_mib"] <= 0.5 * none["peak_run_mib"]
    assert (disk["latent"] - none["latent"]).abs().max().item() <= 1e-5


@pytest.mark.parametrize("profile", ["none", "disk"])
def test_mid_prediction_is_within_15_percent(mid_runs, profile):
    measured, predicted = mid_runs[profile]["peak_mib"], cpu_prediction("mid", profile)
    print(f"mid {profile}: predicted {predicted:.0f} MiB, measured {measured:.0f} MiB ({predicted / measured - 1:+.1%})")
    assert abs(predicted / measured - 1) <= 0.15


def test_ten_generations_do_not_grow_rss():
    runs = run_probe("generate", "--config", "tiny", "--profile", "none", "--repeat", "10")["runs"]
    after = [r["rss_after_mib"] for r in runs]
    print(f"RSS after each of 10 generations (MiB): {after}")
    assert max(after[2:]) <= 1.05 * after[1]
