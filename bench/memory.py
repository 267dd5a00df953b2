"""Predicted vs measured peak memory and seconds per step, per memory profile x config.

    python bench/memory.py [--configs tiny,mid] [--profiles none,model,group,sequential,disk] [--repeat 10]
    python bench/memory.py --full-11b [--profiles none,group]      # a CUDA GPU: the official 11B model

Prints one JSON object per line, one per (config, profile): the planner's prediction (made before
anything loads), the measured peaks (RSS on the CPU; torch.cuda.max_memory_allocated / _reserved
on a GPU, where RSS is reported too), seconds per step, and the prediction's error. Every
measurement runs in its own child process (opensora/memory/probe.py): a peak only ever grows.

--full-11b: the official 11B MMDiT + T5-XXL + CLIP-L + HunyuanVideo VAE at 256px x 129 frames,
random weights made on the meta device (no download), on the GPU under each profile; compared
with the official 60 s / 52.5 GB for 50 steps on one H100. Without CUDA it prints a skip line.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opensora.memory.planner import PlanRequest, plan  # noqa: E402
from opensora.memory.probe import CONFIGS, OFFICIAL_256PX_H100, probe_preset, run_probe  # noqa: E402
from opensora.memory.profiles import load_memory_profiles  # noqa: E402

MIB = 2**20


def predictions(config: str, device: str, dtype: str, fp8: bool) -> dict:
    c = CONFIGS[config]
    request = PlanRequest(probe_preset(c), c.num_frames, c.height, c.width, device=device, dtype=dtype, fp8_mmdit=fp8)
    return {row.profile: row for row in plan(request).rows}


def error(predicted_mib: float, measured_mib: float) -> float:
    return round(predicted_mib / measured_mib - 1, 4)


def fp8_flag(fp8: bool) -> list[str]:
    return ["--fp8"] if fp8 else []


def cpu_row(config: str, profile: str, predicted, repeat: int, fp8: bool) -> dict:
    measured = run_probe("generate", "--config", config, "--profile", profile, "--repeat", str(repeat), *fp8_flag(fp8))
    predicted_mib = round(predicted.ram_gib * 1024, 1)
    return {
        "config": config, "profile": profile, "device": "cpu", "fp8": fp8,
        "predicted_ram_mib": predicted_mib, "measured_peak_rss_mib": measured["peak_mib"],
        "ram_error": error(predicted_mib, measured["peak_mib"]),
        "peak_load_rss_mib": measured["peak_load_mib"], "peak_run_rss_mib": measured["peak_run_mib"],
        "rss_after_each_run_mib": [r["rss_after_mib"] for r in measured["runs"]],
        "seconds_per_step": measured["seconds_per_step"],
    }


def gpu_row(profile: str, predicted, fp8: bool) -> dict:
    measured = run_probe("generate", "--config", "full-11b", "--profile", profile, "--device", "cuda", "--dtype", "bf16",
                         "--threads", "16", *fp8_flag(fp8), timeout=1800)
    predicted_gpu = round(predicted.gpu_gib * 1024, 1)
    return {
        "config": "full-11b", "profile": profile, "device": "cuda", "fp8": fp8,
        "predicted_gpu_mib": predicted_gpu, "measured_gpu_allocated_mib": measured["gpu_allocated_mib"],
        "measured_gpu_reserved_mib": measured["gpu_reserved_mib"],
        # The prediction includes the CUDA context, which the allocator does not see.
        "gpu_error_vs_reserved": error(predicted_gpu, measured["gpu_reserved_mib"]),
        "predicted_ram_mib": round(predicted.ram_gib * 1024, 1), "measured_peak_rss_mib": measured["peak_mib"],
        "seconds_per_step": measured["seconds_per_step"],
        "official_h100": OFFICIAL_256PX_H100,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="tiny,mid", help="CPU configs: tiny, mid")
    parser.add_argument("--profiles", default=",".join(load_memory_profiles()))
    parser.add_argument("--repeat", type=int, default=1, help="generations per process (RSS growth)")
    parser.add_argument("--full-11b", action="store_true", help="the official 11B model on a CUDA GPU")
    parser.add_argument("--fp8", action="store_true", help="MMDiT weights stored in fp8 (layerwise casting)")
    args = parser.parse_args()
    profiles = args.profiles.split(",")
    if args.full_11b:
        import torch

        if not torch.cuda.is_available():
            print(json.dumps({"config": "full-11b", "skipped": "needs a CUDA GPU (torch.cuda.is_available() is False)"}))
            return 0
        rows = predictions("full-11b", "cuda", "bf16", args.fp8)
        for profile in profiles:
            print(json.dumps(gpu_row(profile, rows[profile], args.fp8)), flush=True)
        return 0
    for config in args.configs.split(","):
        rows = predictions(config, "cpu", "fp32", args.fp8)
        for profile in profiles:
            print(json.dumps(cpu_row(config, profile, rows[profile], args.repeat, args.fp8)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
