"""Wall time per denoising step, with the machine's matmul FLOP/s measured in the same run.

    python bench/step.py [--repeats 3] [--skip-slice] [--device cuda --dtype bf16]
    python bench/step.py --hc-scale full --hc-height 576 --hc-width 1024 --hc-frames 129 --device cuda --dtype bf16

Prints one JSON object:
- tiny: median seconds per step of the tiny-random preset (full pipeline step: 3-batch CFG).
- slice: a 1 double + 1 single block slice of the full-width (3072) MMDiT at the 256px 16:9
  33-frame token count (9 x 12 x 21 image tokens + 512 text tokens), batch 3 as in sampling;
  median seconds per step, FLOPs per step (torch's FlopCounterMode) and achieved FLOP/s.
- high_compression: the high-compression path against the 4x8x8 path for the same video size
  (--hc-height x --hc-width, --hc-frames), random weights (--skip-high-compression leaves it out):
  - path_4x8x8: HunyuanVAE (16 channels) + MMDiT with 2x2 patches (64 features per token);
  - path_dc_ae: Video DC-AE (4x32x32, 128 channels) + MMDiT with patch 1 (128 features per token);
  both with the official causal latent frame count ((F - 1) / 4 + 1; the DC-AE decodes 4 frames each).
  Seconds per step (one model call on the sampling batch of 3, median of --repeats after a warm-up,
  the paths alternated so a busy machine slows both alike) and per decode (one batch-1 latent through
  the VAE with the official tiling, median of --decode-repeats), and 4x8x8 / DC-AE ratios.
  --hc-scale mid (the default, for a CPU): every model at a quarter of the official width (MMDiT hidden
  768, 12 heads, 2 double + 4 single blocks, 128 text tokens; Hunyuan VAE block_out_channels (32, 64,
  128, 128); DC-AE widths (32, 64, 128, 128, 256, 256), official depths). --hc-scale full: the
  official models (11B MMDiT, 512 text tokens), for a GPU; the official claim is ~10x at 768px.
- matmul_peak_flops: median FLOP/s of a 4096^3 matmul in --dtype, and the ratio achieved/peak.
"""

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opensora.configs import DCAEConfig, MMDiTConfig, VAEConfig  # noqa: E402
from opensora.models.dc_ae import VideoDCAE  # noqa: E402
from opensora.models.hunyuan_vae import HunyuanVAE  # noqa: E402
from opensora.models.mmdit import build_mmdit, mmdit_forward  # noqa: E402
from opensora.pipeline import OpenSoraPipeline, parse_dtype  # noqa: E402
from opensora.presets import load_preset  # noqa: E402
from opensora.sampling.packing import image_position_ids  # noqa: E402

BATCH = 3  # one model call per sampling step: cond, uncond, uncond without the image condition


def timed(fn, device: str) -> float:
    """Wall seconds of fn(), waiting for the GPU's queue on both sides."""
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def matmul_flops(device: str, dtype: torch.dtype, size: int = 4096, repeats: int = 5) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    times = [timed(lambda: a @ b, device) for _ in range(repeats)]
    return 2 * size**3 / statistics.median(times)


def tiny_step_seconds(device: str, dtype: torch.dtype, steps: int = 20) -> float:
    pipe = OpenSoraPipeline.from_preset("tiny-random", device=device, dtype=dtype)
    pipe("warm-up", num_frames=9, num_steps=2, seed=0)
    stamps = [time.perf_counter()]
    pipe("a cat", num_frames=9, num_steps=steps, seed=0, callback=lambda *_: stamps.append(time.perf_counter()))
    return statistics.median(b - a for a, b in zip(stamps[1:], stamps[2:]))


def slice_step(repeats: int, device: str, dtype: torch.dtype) -> dict:
    preset = load_preset("opensora-v2-256px")
    config = replace(preset.mmdit, depth=1, depth_single_blocks=1)
    torch.manual_seed(0)
    model = build_mmdit(config).eval().to(device, dtype)
    height, width = preset.image_size("256px", "16:9")
    latent_t, latent_h, latent_w = preset.vae.latent_frames(33), height // 8, width // 8
    tokens = latent_t * (latent_h // 2) * (latent_w // 2)
    batch = BATCH

    def inputs(*shape):
        return torch.randn(*shape).to(device, dtype)

    img = inputs(batch, tokens, config.in_channels)
    cond = inputs(batch, tokens, config.cond_channels)
    txt = inputs(batch, preset.text.t5_max_length, config.context_in_dim)
    y_vec = inputs(batch, config.vec_in_dim)
    t = torch.full((batch,), 0.5).to(device, dtype)
    ids = image_position_ids(latent_t, latent_h, latent_w, 2).to(device)

    def step():
        with torch.no_grad():
            mmdit_forward(model, img, cond, txt, y_vec, t, ids)

    with FlopCounterMode(display=False) as counter:
        step()  # also the warm-up
    times = [timed(step, device) for _ in range(repeats)]
    seconds = statistics.median(times)
    flops = counter.get_total_flops()
    return {
        "image_tokens": tokens,
        "text_tokens": preset.text.t5_max_length,
        "batch": batch,
        "params": sum(p.numel() for p in model.parameters()),
        "seconds_per_step_median": seconds,
        "seconds_all": times,
        "flops_per_step": flops,
        "achieved_flops": flops / seconds,
    }


def hc_configs(scale: str) -> dict:
    if scale == "full":
        return {"mmdit": MMDiTConfig(), "text_tokens": 512, "hunyuan": VAEConfig(), "dc_ae": DCAEConfig()}
    mmdit = MMDiTConfig(hidden_size=768, num_heads=12, depth=2, depth_single_blocks=4, axes_dim=(16, 24, 24),
                        context_in_dim=512, vec_in_dim=256)
    hunyuan = VAEConfig(block_out_channels=(32, 64, 128, 128), layers_per_block=2, norm_num_groups=32)
    dc_ae = DCAEConfig(width_list=(32, 64, 128, 128, 256, 256))
    return {"mmdit": mmdit, "text_tokens": 128, "hunyuan": hunyuan, "dc_ae": dc_ae}


class BenchPath:
    """One path's model step and decode, ready to time (models built on the device: an 11B random
    init on the CPU would take minutes)."""

    def __init__(self, mmdit_config: MMDiTConfig, make_vae, latent_shape: tuple, text_tokens: int, device, dtype):
        _, channels, latent_t, latent_h, latent_w = latent_shape
        p = mmdit_config.patch_size
        self.tokens = latent_t * (latent_h // p) * (latent_w // p)
        with torch.device(device):
            self.model, self.vae = build_mmdit(mmdit_config).eval(), make_vae().eval()
        if dtype != torch.float32:  # diffusers warns on fp32 -> fp32 casts
            self.model, self.vae = self.model.to(dtype=dtype), self.vae.to(dtype=dtype)

        def inputs(*shape):
            return torch.randn(*shape).to(device, dtype)

        self.img = inputs(BATCH, self.tokens, mmdit_config.in_channels)
        self.cond = inputs(BATCH, self.tokens, mmdit_config.cond_channels)
        self.txt = inputs(BATCH, text_tokens, mmdit_config.context_in_dim)
        self.y_vec = inputs(BATCH, mmdit_config.vec_in_dim)
        self.t = torch.full((BATCH,), 0.5).to(device, dtype)
        self.ids = image_position_ids(latent_t, latent_h, latent_w, p).to(device)
        self.latent = inputs(1, channels, latent_t, latent_h, latent_w)
        self.info = {"latent_shape": list(latent_shape[1:]), "image_tokens": self.tokens,
                     "features_per_token": mmdit_config.in_channels,
                     "mmdit_params": sum(p.numel() for p in self.model.parameters()),
                     "vae_params": sum(p.numel() for p in self.vae.parameters())}

    def step(self):
        mmdit_forward(self.model, self.img, self.cond, self.txt, self.y_vec, self.t, self.ids)

    def decode(self):
        self.info["decoded_shape"] = list(self.vae.decode(self.latent).shape[1:])


@torch.no_grad()
def interleaved(paths: dict[str, BenchPath], what: str, repeats: int, device: str) -> dict[str, list[float]]:
    """Alternate the paths run by run, so a busy shared machine slows both alike."""
    times = {name: [] for name in paths}
    for _ in range(repeats):
        for name, path in paths.items():
            times[name].append(timed(getattr(path, what), device))
    return times


def high_compression_row(scale: str, height: int, width: int, frames: int, repeats: int, decode_repeats: int,
                         device: str, dtype: torch.dtype) -> dict:
    torch.manual_seed(0)
    c = hc_configs(scale)
    hunyuan_cfg, dc_ae_cfg = c["hunyuan"], c["dc_ae"]
    standard_mmdit = replace(c["mmdit"], in_channels=hunyuan_cfg.latent_channels * 4, patch_size=2)
    hc_mmdit = replace(c["mmdit"], in_channels=dc_ae_cfg.latent_channels, patch_size=1)
    standard_shape = (1, hunyuan_cfg.latent_channels, hunyuan_cfg.latent_frames(frames),
                      height // hunyuan_cfg.spatial_compression, width // hunyuan_cfg.spatial_compression)
    hc_shape = (1, dc_ae_cfg.latent_channels, dc_ae_cfg.latent_frames(frames),
                height // dc_ae_cfg.spatial_compression, width // dc_ae_cfg.spatial_compression)
    row = {
        "scale": scale, "video": {"height": height, "width": width, "frames": frames},
        "mmdit_config": {"hidden_size": c["mmdit"].hidden_size, "num_heads": c["mmdit"].num_heads,
                         "depth": c["mmdit"].depth, "depth_single_blocks": c["mmdit"].depth_single_blocks,
                         "text_tokens": c["text_tokens"], "batch": BATCH},
        "hunyuan_vae_config": {"block_out_channels": list(hunyuan_cfg.block_out_channels),
                               "layers_per_block": hunyuan_cfg.layers_per_block},
        "dc_ae_config": {"width_list": list(dc_ae_cfg.width_list),
                         "encoder_depth_list": list(dc_ae_cfg.encoder_depth_list),
                         "decoder_depth_list": list(dc_ae_cfg.decoder_depth_list)},
    }
    paths = {
        "path_4x8x8": BenchPath(standard_mmdit, lambda: HunyuanVAE(hunyuan_cfg), standard_shape, c["text_tokens"],
                                device, dtype),
        "path_dc_ae": BenchPath(hc_mmdit, lambda: VideoDCAE(dc_ae_cfg), hc_shape, c["text_tokens"], device, dtype),
    }
    interleaved(paths, "step", 1, device)  # warm-up
    steps = interleaved(paths, "step", repeats, device)
    decodes = interleaved(paths, "decode", decode_repeats, device)
    for name, path in paths.items():
        row[name] = {
            **path.info,
            "seconds_per_step_median": statistics.median(steps[name]), "seconds_per_step_all": steps[name],
            "seconds_per_decode_median": statistics.median(decodes[name]), "seconds_per_decode_all": decodes[name],
        }
    for what in ("step", "decode"):
        key = f"seconds_per_{what}_median"
        row[f"{what}_ratio_4x8x8_over_dc_ae"] = row["path_4x8x8"][key] / row["path_dc_ae"][key]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the slice step")
    parser.add_argument("--skip-slice", action="store_true", help="leave out the full-width slice")
    parser.add_argument("--skip-high-compression", action="store_true", help="leave out the high-compression row")
    parser.add_argument("--hc-scale", choices=("mid", "full"), default="mid", help="high-compression row: model widths")
    parser.add_argument("--hc-height", type=int, default=256)
    parser.add_argument("--hc-width", type=int, default=256)
    parser.add_argument("--hc-frames", type=int, default=33, help="requested frames (4k+1)")
    parser.add_argument("--decode-repeats", type=int, default=1, help="timed decodes per path")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    args = parser.parse_args()
    device, dtype = args.device, parse_dtype(args.dtype)
    torch.backends.cuda.matmul.allow_tf32 = False
    result = {"threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
              "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "dtype": args.dtype}
    result["matmul_peak_flops_before"] = matmul_flops(device, dtype)
    result["tiny_seconds_per_step_median"] = tiny_step_seconds(device, dtype)
    if not args.skip_slice:
        result["slice"] = slice_step(args.repeats, device, dtype)
    if not args.skip_high_compression:
        result["high_compression"] = high_compression_row(args.hc_scale, args.hc_height, args.hc_width, args.hc_frames,
                                                          args.repeats, args.decode_repeats, device, dtype)
    result["matmul_peak_flops_after"] = matmul_flops(device, dtype)
    peak = max(result["matmul_peak_flops_before"], result["matmul_peak_flops_after"])
    result["matmul_peak_flops"] = peak
    if "slice" in result:
        result["slice"]["achieved_over_peak"] = result["slice"]["achieved_flops"] / peak
    print(json.dumps(result))


if __name__ == "__main__":
    main()
