"""Run the Open-Sora 1.2 implementation against a folder of official-code fixtures (the format of
tests/fixtures/opensora_v1_2, see its README) and report the max absolute error per check.

Configs, seeds, sizes, runs and step counts come from the fixture JSON files, so folders made with
other dims, seeds, frame counts or step counts work. A family whose files are absent is skipped.
Key-list, prompt-string and mask-case checks count differences (0 = exact).
"""

from pathlib import Path

import torch

from opensora.models.stdit3 import STDiT3, STDiT3Config, build_stdit3, official_key_shapes as stdit3_key_shapes
from opensora.models.stdit3 import position_embedding_2d
from opensora.models.vae_v1_2 import VAEV12Config, VideoVAEV12, build_vae_v1_2, official_to_module
from opensora.models.vae_v1_2 import official_key_shapes as vae_key_shapes
from opensora.parity import Check, _json, _key_list_check, _load
from opensora.sampling.mask_strategy import apply_mask_strategy, frame_mask, parse_mask_strategy, place
from opensora.sampling.prompt_v1_2 import append_scores, t5_prompt
from opensora.sampling.rflow_v1_2 import RFlowSettings, denoise_v1_2, timesteps_v1_2

# Files only a v1.2 folder has (sampler_tiny.* exist in the 2.0 format too).
V1_2_MARKERS = ("stdit3_tiny.json", "stdit3_keys.json", "vae_v1_2_keys.json", "sampler_spec_v1_2.md")


def is_v1_2_folder(folder: str | Path) -> bool:
    return any((Path(folder) / name).exists() for name in V1_2_MARKERS)


def _count_check(differences: int) -> Check:
    check = Check()
    check.max_error, check.ok = float(differences), differences == 0
    return check


# ---------------------------------------------------------------------------------------------
# configs from the fixture JSON


def stdit3_config(config: dict) -> STDiT3Config:
    fields = STDiT3Config.__dataclass_fields__
    return STDiT3Config(**{k: v for k, v in config.items() if k in fields})


def vae_config(config: dict) -> VAEV12Config:
    spatial = config["vae_2d"]["diffusers_AutoencoderKL_config"]
    temporal = config["vae_temporal"]
    return VAEV12Config(
        block_out_channels=spatial["block_out_channels"],
        layers_per_block=spatial["layers_per_block"],
        norm_num_groups=spatial["norm_num_groups"],
        temporal_filters=temporal["filters"],
        temporal_num_res_blocks=temporal["num_res_blocks"],
        temporal_channel_multipliers=temporal["channel_multipliers"],
        temporal_downsample=temporal["temporal_downsample"],
        temporal_num_groups=temporal["num_groups"],
        latent_channels=spatial["latent_channels"],
        micro_frame_size=config["micro_frame_size"],
        micro_batch_size=config["vae_2d"]["micro_batch_size"],
        shift=config["shift"],
        scale=config["scale"],
    )


def load_tiny_stdit3(folder: Path) -> STDiT3:
    model = build_stdit3(stdit3_config(_json(folder / "stdit3_tiny.json")["config"]))
    model.load_state_dict(_load(folder / "stdit3_tiny_weights.safetensors"), strict=True)
    return model.eval()


def load_tiny_vae(folder: Path) -> VideoVAEV12:
    vae = build_vae_v1_2(vae_config(_json(folder / "vae_tiny.json")["config"]))
    vae.load_state_dict(official_to_module(_load(folder / "vae_tiny_weights.safetensors")), strict=True)
    return vae.eval()


# ---------------------------------------------------------------------------------------------


def _block_outputs(model: STDiT3) -> tuple[dict[str, torch.Tensor], list]:
    """Forward hooks recording every block output and the final layer's (the fixture's intermediates)."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    named = [(f"spatial_block{i}", b) for i, b in enumerate(model.spatial_blocks)]
    named += [(f"temporal_block{i}", b) for i, b in enumerate(model.temporal_blocks)]
    named.append(("final_layer", model.final_layer))
    for name, module in named:
        handles.append(module.register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, out)))
    return seen, handles


def check_stdit3(folder: Path) -> dict[str, Check]:
    io = _load(folder / "stdit3_tiny_io.safetensors")
    inter_path = folder / "stdit3_tiny_intermediates.safetensors"
    inter = _load(inter_path) if inter_path.exists() else {}
    model = load_tiny_stdit3(folder)
    cfg = model.config
    check = Check()
    size = dict(fps=io["fps"], height=io["height"], width=io["width"])
    seen, handles = _block_outputs(model)
    try:
        for prefix, x_mask, y, key in (
            ("nomask", None, io["y"], "out"),
            ("xmask", io["x_mask"], io["y"], "out_xmask"),
            (None, io["x_mask"], model.null_caption(io["y"].shape[0]), "out_ynull_xmask"),
        ):
            check.compare(model(io["x"], io["timestep"], y, io["mask"], x_mask, **size), io[key])
            for name, value in seen.items():
                if prefix and f"{prefix}.{name}" in inter:
                    check.compare(value, inter[f"{prefix}.{name}"])
    finally:
        for handle in handles:
            handle.remove()
    if "y_null" in io:
        check.compare(model.null_caption(io["y_null"].shape[0]), io["y_null"])
    if "nomask.pos_emb" in inter:
        _, _, _, h, w = io["x"].shape
        rows, cols = -(-h // cfg.patch_size[1]), -(-w // cfg.patch_size[2])
        scale = (io["height"][0].item() * io["width"][0].item()) ** 0.5 / cfg.input_sq_size
        pos = position_embedding_2d(cfg.hidden_size, rows, cols, scale, round((rows * cols) ** 0.5))
        check.compare(pos, inter["nomask.pos_emb"])
    return {"stdit3": check}


def _param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def check_key_lists(folder: Path) -> dict[str, Check]:
    """Exact key sets and shapes, and the official parameter count, of the full-size models."""
    result = {}
    if (folder / "stdit3_keys.json").exists():
        data = _json(folder / "stdit3_keys.json")
        config = STDiT3Config()  # the STDiT3-XL/2 builder hard-codes the sizes
        config.in_channels = data["config"].get("in_channels", config.in_channels)
        config.caption_channels = data["config"].get("caption_channels", config.caption_channels)
        config.model_max_length = data["config"].get("model_max_length", config.model_max_length)
        config.qk_norm = data["config"].get("qk_norm", config.qk_norm)
        check = _key_list_check(stdit3_key_shapes(config), data["keys"])
        with torch.device("meta"):
            count = _param_count(build_stdit3(config))
        result["stdit3_keys"] = _count_check(int(check.max_error) + (count != data["total_params"]))
    if (folder / "vae_v1_2_keys.json").exists():
        data = _json(folder / "vae_v1_2_keys.json")
        spatial = data["config"].get("vae_2d_diffusers_config", {})
        config = VAEV12Config(
            block_out_channels=spatial.get("block_out_channels", VAEV12Config.block_out_channels),
            layers_per_block=spatial.get("layers_per_block", VAEV12Config.layers_per_block),
            norm_num_groups=spatial.get("norm_num_groups", VAEV12Config.norm_num_groups),
            micro_frame_size=data["config"].get("micro_frame_size", 17),
            micro_batch_size=data["config"].get("micro_batch_size", 4),
        )
        check = _key_list_check(vae_key_shapes(config), data["keys"])
        with torch.device("meta"):
            count = _param_count(build_vae_v1_2(config))
        result["vae_v1_2_keys"] = _count_check(int(check.max_error) + (count != data["total_params"]))
    return result


def _encode_seed(seeds: dict) -> int:
    return next(v for k, v in seeds.items() if k.startswith("global RNG before each official encode"))


def check_vae(folder: Path) -> dict[str, Check]:
    meta = _json(folder / "vae_tiny.json")
    io = _load(folder / "vae_tiny_io.safetensors")
    vae = load_tiny_vae(folder)
    seed = _encode_seed(meta["seeds"])
    encode, decode = Check(), Check()
    for index, frames in enumerate(meta["frames"]):
        p = f"v{frames}."
        video = io[p + "video"]
        # official: torch.manual_seed(seed + index) before each encode; a CPU generator draws the same
        encode.compare(vae.encode_spatial(video, True, torch.Generator().manual_seed(seed + index)), io[p + "x_z"])
        encode.compare(vae.encode(video, True, torch.Generator().manual_seed(seed + index)), io[p + "latent"])
        encode.compare(vae.encode_spatial(video, sample=False), io[p + "mode.x_z"])
        encode.compare(vae.encode(video, sample=False), io[p + "mode.latent"])
        for prefix in ("", "mode."):
            latent = io[p + prefix + "latent"]
            z = latent * vae.scale + vae.shift
            decode.compare(vae.decode_temporal(z, frames), io[p + prefix + "x_z_rec"])
            decode.compare(vae.decode(latent, frames), io[p + prefix + "decoded"])
    return {"vae_v1_2_encode": encode, "vae_v1_2_decode": decode}


class RecordingModel:
    """Calls the model and keeps every (z, x_mask, output) it saw."""

    def __init__(self, model: STDiT3):
        self.model, self.calls = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def __call__(self, z, t, y, mask, x_mask, **size):
        out = self.model(z, t, y, mask, x_mask, **size)
        self.calls.append((z, x_mask, out))
        return out


def _run_settings(meta: dict, run: dict) -> RFlowSettings:
    options, scheduler = meta["inference_options"], meta["scheduler_config"]
    height, width = options["image_size"]
    return RFlowSettings(
        height=height, width=width, num_frames=options["num_frames"], fps=options["fps"],
        num_steps=scheduler["num_sampling_steps"], cfg_scale=scheduler["cfg_scale"],
        use_timestep_transform=scheduler["use_timestep_transform"], align=options["align"],
    )


def _run_references(io: dict, vae: VideoVAEV12, name: str, run: dict, check: Check) -> list[list[torch.Tensor]]:
    """The stored reference latents of a run; re-encoding the stored pixels with the recorded seed
    must give them (the official collect_references_batch draws in item, path order)."""
    seed = run.get("ref_encode_global_rng_seed")
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    references = []
    for b, paths in enumerate(run["reference_path"]):
        refs = []
        for j, path in enumerate(p for p in paths.split(";") if p):
            stored = io[f"{name}.ref{b}_{j}.latent"]
            if generator is not None and f"ref_pixels.{path}" in io:
                check.compare(vae.encode(io[f"ref_pixels.{path}"][None], True, generator)[0], stored)
            refs.append(stored)
        references.append(refs)
    return references


def check_sampler_runs(folder: Path) -> dict[str, Check]:
    meta = _json(folder / "sampler_tiny.json")
    io = _load(folder / "sampler_tiny_io.safetensors")
    model, vae = load_tiny_stdit3(folder), load_tiny_vae(folder)
    results = {}
    for run in meta["runs"]:
        name, check = run["name"], Check()
        settings = _run_settings(meta, run)
        noise = io[f"{name}.noise"]
        batch = noise.shape[0]
        references = _run_references(io, vae, name, run, check)
        strategies = run.get("mask_strategy", [""] * batch)
        if not references:
            references = [[] for _ in range(batch)]
        z_init, masks = apply_mask_strategy(noise, references, strategies, 0, settings.align)
        check.compare(z_init, io[f"{name}.z_init"])
        check.compare(masks, io[f"{name}.masks"])
        check.compare(torch.stack(timesteps_v1_2(settings, batch))[:, 0], io[f"{name}.timesteps"])

        recorder = RecordingModel(model)
        generator = torch.Generator().manual_seed(run["global_rng_seed_before_sample"])
        final = denoise_v1_2(recorder, z_init, masks, io[f"{name}.y"], io[f"{name}.y_mask"], settings, generator=generator)
        check.compare(torch.stack([z[:batch] for z, _, _ in recorder.calls]), io[f"{name}.step_latents"])
        check.compare(torch.stack([m for _, m, _ in recorder.calls]).float(), io[f"{name}.step_x_mask"].float())
        check.compare(torch.stack([o for _, _, o in recorder.calls]), io[f"{name}.step_model_out"])
        check.compare(final, io[f"{name}.final_latent"])
        if f"{name}.video" in io:
            check.compare(vae.decode(final, settings.num_frames), io[f"{name}.video"])
        results[f"sampler_v1_2_{name}"] = check
    return results


def check_sampler_logic(folder: Path) -> dict[str, Check]:
    """Prompt strings, mask-strategy cases (no tensors) and the official-size schedules."""
    meta = _json(folder / "sampler_tiny.json")
    wrong_prompts = 0
    for example in meta.get("prompt_augmentation_examples", []):
        kwargs = {"aes": None, **example["kwargs"]}
        wrong_prompts += append_scores(example["prompt"], **kwargs) != example["after_append_score"]
        wrong_prompts += t5_prompt(example["prompt"], **kwargs) != example["after_text_preprocessing"]
    for run in meta["runs"]:
        for prompt, expected in zip(run["after_extract_json"], run["prompts_given_to_text_encoder"]):
            wrong_prompts += t5_prompt(prompt, run["aes"], run["flow"], run["camera_motion"]) != expected

    wrong_cases = 0
    for case in meta.get("mask_strategy_cases", []):
        t = case["latent_T"]
        groups = parse_mask_strategy(case["mask_strategy"])
        placements = place(groups, t, case["ref_latent_frames"], case["loop_i"], case["align"])
        source: list = [None] * t
        for p in placements:
            for k in range(p.length):
                source[p.target_start + k] = [p.ref_index, p.ref_start + k]
        expected_source = next(v for k, v in case.items() if k.startswith("target_frame_source"))
        mask_ok = torch.allclose(frame_mask(placements, t), torch.tensor(case["mask"]), atol=1e-7)
        wrong_cases += not (mask_ok and source == expected_source)

    schedules = Check()
    key = next((k for k in meta if k.startswith("schedule_examples (")), None)
    for example in meta.get(key, []) if key else []:
        settings = RFlowSettings(
            height=example["height"], width=example["width"], num_frames=example["num_frames"],
            num_steps=example["num_sampling_steps"],
        )
        ours, theirs = torch.stack(timesteps_v1_2(settings))[:, 0], torch.tensor(example["timesteps"])
        # 2..16 frames: the official schedule is NaN, then 0; the same NaNs count as a match
        if not torch.equal(ours.isnan(), theirs.isnan()):
            schedules.max_error, schedules.ok = float("inf"), False
        schedules.compare(ours.nan_to_num(0.0), theirs.nan_to_num(0.0))
    return {
        "sampler_v1_2_prompts": _count_check(wrong_prompts),
        "sampler_v1_2_mask_cases": _count_check(wrong_cases),
        "sampler_v1_2_schedules": schedules,
    }


FAMILIES = [
    (("stdit3_tiny_io.safetensors", "stdit3_tiny_weights.safetensors"), check_stdit3),
    (("vae_tiny_io.safetensors", "vae_tiny_weights.safetensors"), check_vae),
    (("sampler_tiny_io.safetensors", "stdit3_tiny_weights.safetensors", "vae_tiny_weights.safetensors"), check_sampler_runs),
    (("sampler_tiny.json",), check_sampler_logic),
]


@torch.no_grad()
def collect_checks(folder: str | Path) -> dict[str, Check]:
    folder = Path(folder)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # The tensors are tiny: on a shared CPU, extra threads cost more than they save (10x here);
    # the official fixtures were made with one thread too.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        checks: dict[str, Check] = {}
        for needed, family in FAMILIES:
            if all((folder / name).exists() for name in needed):
                checks.update(family(folder))
        checks.update(check_key_lists(folder))
    finally:
        torch.set_num_threads(threads)
    return checks


def run_checks(folder: Path) -> dict[str, float | None]:
    """{check name: max abs error (counts for exact checks)} of a v1.2 fixture folder."""
    return {name: check.max_error for name, check in collect_checks(folder).items()}


def run_parity_v1_2(folder: str | Path) -> tuple[dict[str, float | None], bool]:
    """As opensora.parity.run_parity: (errors, every check within tolerance)."""
    checks = collect_checks(folder)
    return {name: c.max_error for name, c in checks.items()}, all(c.ok for c in checks.values())
