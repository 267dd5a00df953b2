"""Run this implementation against a folder of official-code fixtures (the format of
tests/fixtures/opensora_v2, see its README) and report the max absolute error per check.

Configs come from the fixture JSON files, so fixtures made with other seeds and sizes work.
A family whose files are absent is skipped. The Video DC-AE checks are `opensora.parity_dc_ae`'s;
a DC-AE check whose tensors a folder lacks reports None.
"""

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file

from opensora.models.hunyuan_vae import HunyuanVAE, VAEConfig
from opensora.models.mmdit import MMDiTConfig, build_mmdit, mmdit_forward
from opensora.models.mmdit_convert import official_key_shapes, official_to_diffusers
from opensora.presets import CheckpointFiles, Preset, SamplerDefaults
from opensora.models.text_encoders import TextConfig
from opensora.sampling.conditioning import COND_TYPES, prepare_condition
from opensora.sampling.denoise import GuidanceOptions
from opensora.sampling.packing import pack

ATOL = 1e-4
RTOL = 1e-4


class Check:
    """Max abs error of one named check, and whether every compared tensor is within tolerance."""

    def __init__(self):
        self.max_error = 0.0
        self.ok = True

    def compare(self, actual: torch.Tensor, expected: torch.Tensor) -> None:
        actual, expected = actual.detach().double().cpu(), expected.double()
        if actual.shape != expected.shape:
            self.max_error, self.ok = float("inf"), False
            return
        diff = (actual - expected).abs()
        self.max_error = max(self.max_error, diff.max().item() if diff.numel() else 0.0)
        self.ok &= bool((diff <= ATOL + RTOL * expected.abs()).all())


def _load(path: Path) -> dict[str, torch.Tensor]:
    # clone: memory-mapped tensors may be unaligned, which changes GEMM rounding at the ulp level
    return {k: v.clone() for k, v in load_file(str(path)).items()}


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def mmdit_config(config: dict, rope: str = "rotate_half") -> MMDiTConfig:
    fields = MMDiTConfig.__dataclass_fields__
    return MMDiTConfig(**{k: v for k, v in config.items() if k in fields}, rope=rope)


def vae_config(config: dict) -> VAEConfig:
    return VAEConfig(
        block_out_channels=config["block_out_channels"],
        layers_per_block=config["layers_per_block"],
        norm_num_groups=config["norm_num_groups"],
        latent_channels=config["latent_channels"],
        scale_factor=config["scale_factor"],
        shift_factor=config["shift_factor"],
        time_compression=config["time_compression_ratio"],
        spatial_compression=config["spatial_compression_ratio"],
        mid_block_add_attention=config["mid_block_add_attention"],
        spatial_tiling=config["use_spatial_tiling"],
        tile_size=config["sample_size"],
        tile_overlap_factor=config["tile_overlap_factor"],
    )


def load_tiny_mmdit(folder: Path, rope: str = "rotate_half"):
    config = mmdit_config(_json(folder / "mmdit_tiny.json")["config"], rope)
    model = build_mmdit(config)
    model.load_state_dict(official_to_diffusers(_load(folder / "mmdit_tiny_weights.safetensors"), config))
    return config, model.eval()


def load_tiny_vae(folder: Path) -> HunyuanVAE:
    vae = HunyuanVAE(vae_config(_json(folder / "hunyuan_vae_tiny.json")["config"]))
    vae.model.load_state_dict(_load(folder / "hunyuan_vae_tiny_weights.safetensors"), strict=True)
    return vae.eval()


# ---------------------------------------------------------------------------------------------
def check_mmdit(folder: Path) -> dict[str, float]:
    io = _load(folder / "mmdit_tiny_io.safetensors")
    result = {}
    for name, rope, key in (("mmdit", "rotate_half", "out_rope_liger"), ("mmdit_interleaved", "interleaved", "out_rope_interleaved")):
        _, model = load_tiny_mmdit(folder, rope)
        check = Check()
        out = mmdit_forward(model, io["img"], io["cond"], io["txt"], io["y_vec"], io["timesteps"], io["img_ids"][0])
        check.compare(out, io[key])
        result[name] = check
    return result


def _key_list_check(ours: dict[str, tuple], listed: list[dict]) -> Check:
    """Key lists must match exactly: the 'error' is the number of differing keys and shapes."""
    theirs = {e["name"]: tuple(e["shape"]) for e in listed}
    differing = len(set(ours) ^ set(theirs)) + sum(ours[k] != theirs[k] for k in set(ours) & set(theirs))
    check = Check()
    check.max_error, check.ok = float(differing), differing == 0
    return check


def check_key_lists(folder: Path) -> dict[str, Check | None]:
    result: dict[str, Check | None] = {}
    for name in ("mmdit_v2_keys", "mmdit_v2_dcae_keys"):
        if (folder / f"{name}.json").exists():
            data = _json(folder / f"{name}.json")
            result[name] = _key_list_check(official_key_shapes(mmdit_config(data["config"])), data["keys"])
    if (folder / "hunyuan_vae_keys.json").exists():
        data = _json(folder / "hunyuan_vae_keys.json")
        with torch.device("meta"):
            vae = HunyuanVAE(VAEConfig(layers_per_block=data["config"]["layers_per_block"]))
        ours = {k: tuple(v.shape) for k, v in vae.model.state_dict().items()}
        result["hunyuan_vae_keys"] = _key_list_check(ours, data["keys"])
    if (folder / "flux_dev_keys.json").exists():
        from opensora.models.flux_image import FLUX_DEV, flux_key_shapes

        listed = _json(folder / "flux_dev_keys.json")["keys"]
        result["flux_dev_keys"] = _key_list_check(flux_key_shapes(FLUX_DEV), listed)
    return result


def check_dc_ae(folder: Path) -> dict[str, Check | None]:
    from opensora.parity_dc_ae import dc_ae_checks  # it builds on this module's Check

    return dc_ae_checks(folder)


def check_vae(folder: Path) -> dict[str, Check]:
    io = _load(folder / "hunyuan_vae_tiny_io.safetensors")
    seeds = _json(folder / "hunyuan_vae_tiny.json")["seeds"]
    vae = load_tiny_vae(folder)
    encode, decode, tiled_encode, tiled_decode = Check(), Check(), Check(), Check()

    def run(prefix: str, seed_name: str, enc: Check, dec: Check) -> None:
        pixels = io[prefix] if prefix in io else io[f"{prefix}.video"]
        mean, logvar = vae.moments(pixels)
        enc.compare(mean, io[f"{prefix}.mean"])
        enc.compare(logvar, io[f"{prefix}.logvar"])
        enc.compare(vae.encode(pixels, sample=False), io[f"{prefix}.z_mode_scaled"])
        generator = torch.Generator().manual_seed(seeds[seed_name])
        enc.compare(vae.encode(pixels, sample=True, generator=generator), io[f"{prefix}.z_sample_scaled"])
        dec.compare(vae.decode(io[f"{prefix}.z_mode_scaled"]), io[f"{prefix}.decoded"])

    run("video", "posterior_eps_video", encode, decode)
    run("image", "posterior_eps_image", encode, decode)
    tiled_size = _json(folder / "hunyuan_vae_tiny.json").get("tiled_config_override", {}).get("sample_size")
    if tiled_size and "tiled.video" in io:
        vae.set_tiling(True, tiled_size)
        run("tiled", "posterior_eps_tiled", tiled_encode, tiled_decode)
    return {"vae_encode": encode, "vae_decode": decode, "vae_tiled_encode": tiled_encode, "vae_tiled_decode": tiled_decode}


def check_cond_layouts(folder: Path) -> dict[str, Check]:
    data = _load(folder / "cond_layouts.safetensors")
    meta = _json(folder / "cond_layouts.json")
    shape, patch = tuple(meta["latent_shape"]), meta["pack_patch_size"]
    check = Check()
    for cond_type in COND_TYPES:
        if f"{cond_type}.masks" not in data:
            continue
        refs = [data[f"{cond_type}.ref{j}"] for j in range(4) if f"{cond_type}.ref{j}" in data]
        masks, masked_ref = prepare_condition(shape, cond_type, [refs])
        check.compare(masks, data[f"{cond_type}.masks"])
        check.compare(masked_ref, data[f"{cond_type}.masked_ref"])
        check.compare(pack(torch.cat([masks, masked_ref], 1), patch), data[f"{cond_type}.cond_packed"])
    return {"cond_layouts": check}


def check_sampler(folder: Path) -> dict[str, Check]:
    """Every run of sampler_tiny: per-step latents, final latent and decoded video."""
    from opensora.pipeline import OpenSoraPipeline

    meta = _json(folder / "sampler_tiny.json")
    option = meta["sampling_option"]
    io = _load(folder / "sampler_tiny_io.safetensors")
    mmdit_cfg, transformer = load_tiny_mmdit(folder)
    vae = load_tiny_vae(folder)
    preset = Preset(
        name="fixture", description="", weights="random", files=CheckpointFiles(), mmdit=mmdit_cfg,
        vae=vae.config, text=TextConfig(), buckets={},
        sampler=SamplerDefaults(shift=option["shift"], flow_shift=option["flow_shift"]),
    )
    pipe = OpenSoraPipeline(preset, transformer, vae, text_encoder=None)
    options = GuidanceOptions(
        guidance=option["guidance"], guidance_img=option["guidance_img"], text_osci=option["text_osci"],
        image_osci=option["image_osci"], scale_temporal_osci=option["scale_temporal_osci"],
    )
    references = {
        "t2v": [],
        "i2v_head": [io.get("ref.head")],
        "i2v_tail": [io.get("ref.tail")],
        "i2v_loop": [io.get("ref.head"), io.get("ref.tail")],
        "v2v_head": [io.get("ref.v2v")],
        "v2v_tail": [io.get("ref.v2v")],
    }
    results = {}
    for cond_type, run in meta["runs"].items():
        check = Check()
        steps: list[torch.Tensor] = []
        latent = pipe.sample(
            io[f"{cond_type}.noise"], io[f"{cond_type}.txt_batch3"], io[f"{cond_type}.y_vec_batch3"],
            cond_type, [references.get(cond_type, [])], options, option["num_steps"],
            callback=lambda i, n, x: steps.append(pack(x, mmdit_cfg.patch_size)[0]),
        )
        check.compare(torch.stack(steps), io[f"{cond_type}.step_latents"][1:])
        check.compare(latent, io[f"{cond_type}.final_latent"])
        if f"{cond_type}.video" in io:
            video = vae.decode(latent)[:, :, : run["num_frames_pixels"]]
            check.compare(video, io[f"{cond_type}.video"])
        results[f"sampler_{cond_type}"] = check
    return results


FAMILIES: list[tuple[str, Callable[[Path], dict]]] = [
    ("mmdit_tiny_io.safetensors", check_mmdit),
    ("hunyuan_vae_tiny_io.safetensors", check_vae),
    ("cond_layouts.safetensors", check_cond_layouts),
    ("sampler_tiny_io.safetensors", check_sampler),
    ("dc_ae_tiny_io.safetensors", check_dc_ae),  # also checks dc_ae_keys.json
]


@torch.no_grad()
def run_parity(folder: str | Path) -> tuple[dict[str, float | None], bool]:
    """({check name: max abs error or None}, all checks within tolerance)."""
    folder = Path(folder)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    checks: dict[str, Check | None] = {}
    for marker, family in FAMILIES:
        if (folder / marker).exists():
            checks.update(family(folder))
    checks.update(check_key_lists(folder))
    if "dc_ae_keys" not in checks and (folder / "dc_ae_keys.json").exists():
        checks.update(check_dc_ae(folder))  # the key list alone
    errors = {name: None if c is None else c.max_error for name, c in checks.items()}
    ok = all(c.ok for c in checks.values() if c is not None)
    return errors, ok
