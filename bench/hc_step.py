"""The high-compression path against the 4x8x8 path: seconds per MMDiT step and per decode for the
same video size, in one run, with random weights.

    python bench/hc_step.py [--scale mid] [--height 256 --width 256 --frames 33] [--repeats 3]
    python bench/hc_step.py --scale full --height 576 --width 1024 --frames 129 --device cuda --dtype bf16

- 4x8x8 path: HunyuanVAE (16 channels) + MMDiT with 2x2 patches (64 features per token).
- DC-AE path: Video DC-AE (4x32x32, 128 channels) + MMDiT with patch 1 (128 features per token).
Both get `--frames` through their own frame rule (Hunyuan: (F - 1) / 4 + 1 latent frames; DC-AE,
non-causal: F // 4, decoding to 4 frames each) and the same pixel height / width.

`--scale mid` (the default, for a CPU): every model at a quarter of the official width with the
official depth pattern cut down: MMDiT hidden 768, 12 heads (head dim 64), 2 double + 4 single
blocks, 128 text tokens; Hunyuan VAE block_out_channels (32, 64, 128, 128), 2 layers per block;
DC-AE widths (32, 64, 128, 128, 256, 256), the official depths. `--scale full`: the official
models (11B MMDiT, 512 text tokens) - for a GPU. A step is one model call on the sampling batch of
3 (cond, uncond, uncond without image), median of `--repeats` after a warm-up; a decode is one
batch-1 latent through the VAE with the official tiling (median of `--decode-repeats`).
Prints one JSON object.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opensora.models.dc_ae import DCAEConfig, VideoDCAE  # noqa: E402
from opensora.models.hunyuan_vae import HunyuanVAE, VAEConfig  # noqa: E402
from opensora.models.mmdit import MMDiTConfig, build_mmdit, mmdit_forward  # noqa: E402
from opensora.pipeline import parse_dtype  # noqa: E402
from opensora.sampling.packing import image_position_ids  # noqa: E402

BATCH = 3  # one model call per sampling step: cond, uncond, uncond without the image condition


def configs(scale: str) -> dict:
    if scale == "full":
        return {"mmdit": MMDiTConfig(), "text_tokens": 512, "hunyuan": VAEConfig(), "dc_ae": DCAEConfig()}
    mmdit = MMDiTConfig(hidden_size=768, num_heads=12, depth=2, depth_single_blocks=4, axes_dim=(16, 24, 24),
                        context_in_dim=512, vec_in_dim=256)
    hunyuan = VAEConfig(block_out_channels=(32, 64, 128, 128), layers_per_block=2, norm_num_groups=32)
    dc_ae = DCAEConfig(width_list=(32, 64, 128, 128, 256, 256))
    return {"mmdit": mmdit, "text_tokens": 128, "hunyuan": hunyuan, "dc_ae": dc_ae}


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


class BenchPath:
    """One path's model step and decode, ready to time."""

    def __init__(self, mmdit_config: MMDiTConfig, vae, latent_shape: tuple, text_tokens: int, device, dtype):
        _, channels, latent_t, latent_h, latent_w = latent_shape
        p = mmdit_config.patch_size
        self.tokens = latent_t * (latent_h // p) * (latent_w // p)
        self.model = build_mmdit(mmdit_config).eval().to(device)
        self.vae = vae.eval().to(device)
        if dtype != torch.float32:  # diffusers warns on fp32 -> fp32 casts
            self.model, self.vae = self.model.to(dtype=dtype), self.vae.to(dtype=dtype)

        def inputs(*shape):
            return torch.randn(*shape).to(device, dtype)

        self.img = inputs(BATCH, self.tokens, mmdit_config.in_channels)
        self.cond = inputs(BATCH, self.tokens, mmdit_config.cond_channels)
        self.txt, self.y_vec = inputs(BATCH, text_tokens, mmdit_config.context_in_dim), inputs(BATCH, mmdit_config.vec_in_dim)
        self.t = torch.full((BATCH,), 0.5).to(device, dtype)
        self.ids = image_position_ids(latent_t, latent_h, latent_w, p).to(device)
        self.latent = inputs(1, channels, latent_t, latent_h, latent_w)
        self.info = {"latent_shape": list(latent_shape[1:]), "image_tokens": self.tokens,
                     "features_per_token": mmdit_config.in_channels}

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=("mid", "full"), default="mid")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--frames", type=int, default=33, help="requested frames (4k+1: both frame rules apply)")
    parser.add_argument("--repeats", type=int, default=3, help="timed model steps per path")
    parser.add_argument("--decode-repeats", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    args = parser.parse_args()
    dtype = parse_dtype(args.dtype)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.manual_seed(0)
    c = configs(args.scale)
    hunyuan_cfg, dc_ae_cfg = c["hunyuan"], c["dc_ae"]
    standard_mmdit = replace(c["mmdit"], in_channels=hunyuan_cfg.latent_channels * 4, patch_size=2)
    hc_mmdit = replace(c["mmdit"], in_channels=dc_ae_cfg.latent_channels, patch_size=1)

    standard_shape = (1, hunyuan_cfg.latent_channels, hunyuan_cfg.latent_frames(args.frames),
                      args.height // hunyuan_cfg.spatial_compression, args.width // hunyuan_cfg.spatial_compression)
    hc_shape = (1, dc_ae_cfg.latent_channels, dc_ae_cfg.latent_frames(args.frames),
                args.height // dc_ae_cfg.spatial_compression, args.width // dc_ae_cfg.spatial_compression)
    result = {
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "dtype": args.dtype,
        "scale": args.scale, "video": {"height": args.height, "width": args.width, "frames": args.frames},
        "mmdit_config": {"hidden_size": c["mmdit"].hidden_size, "num_heads": c["mmdit"].num_heads, "depth": c["mmdit"].depth,
                  "depth_single_blocks": c["mmdit"].depth_single_blocks, "text_tokens": c["text_tokens"], "batch": BATCH},
        "hunyuan_vae_config": {"block_out_channels": list(hunyuan_cfg.block_out_channels),
                        "layers_per_block": hunyuan_cfg.layers_per_block},
        "dc_ae_config": {"width_list": list(dc_ae_cfg.width_list), "encoder_depth_list": list(dc_ae_cfg.encoder_depth_list),
                  "decoder_depth_list": list(dc_ae_cfg.decoder_depth_list)},
    }
    paths = {
        "path_4x8x8": BenchPath(standard_mmdit, HunyuanVAE(hunyuan_cfg), standard_shape, c["text_tokens"], args.device, dtype),
        "path_dc_ae": BenchPath(hc_mmdit, VideoDCAE(dc_ae_cfg), hc_shape, c["text_tokens"], args.device, dtype),
    }
    interleaved(paths, "step", 1, args.device)  # warm-up
    steps = interleaved(paths, "step", args.repeats, args.device)
    decodes = interleaved(paths, "decode", args.decode_repeats, args.device)
    for name, path in paths.items():
        result[name] = {
            **path.info,
            "seconds_per_step_median": statistics.median(steps[name]), "seconds_per_step_all": steps[name],
            "seconds_per_decode_median": statistics.median(decodes[name]), "seconds_per_decode_all": decodes[name],
        }
    for what in ("step", "decode"):
        key = f"seconds_per_{what}_median"
        result[f"{what}_ratio_4x8x8_over_dc_ae"] = result["path_4x8x8"][key] / result["path_dc_ae"][key]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
