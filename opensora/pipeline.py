"""OpenSoraPipeline: prompt (+ reference) -> videos, the one object the CLI, UI and API call.

    pipe = OpenSoraPipeline.from_preset("tiny-random")
    result = pipe("a cat", num_frames=9, aspect_ratio="16:9", seed=42)
    result.videos[0]  # (3, T, H, W) float in [-1, 1]
"""

import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from opensora.errors import UserError
from opensora.io.reference import load_reference, load_reference_frame
from opensora.loading import load_components
from opensora.models.mmdit import mmdit_forward
from opensora.presets import MAX_FRAMES, Preset, load_preset
from opensora.prompts import check_motion_score, model_prompt
from opensora.sampling.conditioning import (
    normalize_cond_type,
    prepare_condition,
    reference_spec,
    replace_reference_frames,
)
from opensora.sampling.denoise import GuidanceOptions, StepCallback, denoise
from opensora.sampling.packing import image_position_ids, pack, unpack
from opensora.sampling.schedule import make_scheduler

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SEED_MAX = 2**32 - 1
RANGES = {"num_steps": (1, 500), "guidance": (0.0, 50.0), "guidance_img": (0.0, 50.0), "num_samples": (1, 64)}


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise UserError(f"unknown dtype {name!r}; allowed: {', '.join(DTYPES)}")
    return DTYPES[name]


def check_num_frames(num_frames) -> int:
    if not isinstance(num_frames, int) or num_frames < 1 or num_frames > MAX_FRAMES or (num_frames - 1) % 4:
        raise UserError(
            f"num_frames {num_frames!r} is not allowed: use 4k+1 frames between 1 and {MAX_FRAMES} "
            "(1, 5, 9, ..., 33, ..., 129)"
        )
    return num_frames


def check_range(name: str, value, low, high):
    if value is None or not low <= value <= high:
        raise UserError(f"{name} {value!r} is out of range: allowed {low} to {high}")
    return value


@dataclass
class GenerationResult:
    videos: list[torch.Tensor]  # one (3, T, H, W) tensor in [-1, 1] per sample
    settings: list[dict]  # everything needed to reproduce each video (the sidecar)
    latents: list[torch.Tensor] = field(default_factory=list)


class OpenSoraPipeline:
    def __init__(self, preset: Preset, transformer, vae, text_encoder, device="cpu", dtype=torch.float32):
        self.preset, self.transformer, self.vae, self.text_encoder = preset, transformer, vae, text_encoder
        self.device, self.dtype = torch.device(device), dtype
        self.loras: list[dict] = []  # {"path", "scale"} of each merged LoRA, in load order
        self._unmerged_weights: dict[str, torch.Tensor] = {}  # weights as they were before any LoRA

    @classmethod
    def from_preset(cls, preset: str | Preset, ckpt_dir=None, device="cpu", dtype: str | torch.dtype = "fp32"):
        preset = preset if isinstance(preset, Preset) else load_preset(preset)
        dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
        transformer, vae, text = load_components(preset, ckpt_dir, device, dtype)
        return cls(preset, transformer, vae, text, device, dtype)

    # ----------------------------------------------------------------------------------------
    def load_lora(self, path: str | Path, scale: float = 1.0) -> None:
        """Merge a LoRA from `python -m training finetune` into the MMDiT: W += scale * (alpha/r) * B @ A.

        Several LoRAs stack; `unload_loras()` restores the weights exactly as loaded.
        """
        from opensora.lora import check_lora_fits, check_scale, lora_delta, read_lora_file

        check_scale(scale)
        lora = read_lora_file(path)
        check_lora_fits(lora, self.transformer, self.preset.name)
        layers = dict(self.transformer.named_modules())
        with torch.no_grad():
            for module, (a, b) in lora.pairs.items():
                weight = layers[module].weight
                # Keep the first, untouched copy only: stacking LoRAs never loses the original.
                self._unmerged_weights.setdefault(module, weight.detach().clone())
                delta = lora_delta(a.to(weight.device), b.to(weight.device), lora.scaling, scale)
                weight.copy_((weight.float() + delta).to(weight.dtype))
        self.loras.append({"path": str(path), "scale": float(scale)})

    def unload_loras(self) -> None:
        """Put back the weights from before the first `load_lora`."""
        layers = dict(self.transformer.named_modules())
        with torch.no_grad():
            for module, original in self._unmerged_weights.items():
                layers[module].weight.copy_(original)
        self._unmerged_weights.clear()
        self.loras.clear()

    def _model_fn(self, img, cond, txt, y_vec, timesteps, img_ids):
        return mmdit_forward(self.transformer, img, cond, txt, y_vec, timesteps, img_ids)

    def _encode_references(self, cond_type: str, reference, height: int, width: int, generator) -> list:
        """Reference latents as the official loader builds them (sampler_spec.md, section 7)."""
        spec = reference_spec(cond_type)
        if spec is None:
            return []
        if not reference:
            raise UserError(f"cond type {cond_type} needs a reference image or video (--ref)")
        paths = reference if isinstance(reference, (list, tuple)) else str(reference).split(";")
        paths = [Path(p.strip()) for p in paths if str(p).strip()]
        if spec.paths == "first_and_last":
            pixels = [
                load_reference_frame(paths[0], "first", height, width),
                load_reference_frame(paths[-1], "last", height, width),
            ]
        elif spec.frames == 1:
            path = paths[0] if spec.paths == "first" else paths[-1]
            pixels = [load_reference_frame(path, spec.which, height, width)]
        else:
            video = load_reference(paths[0], height, width)
            if video.shape[1] < spec.frames:
                raise UserError(
                    f"{cond_type} needs a reference video of at least {spec.frames} frames; "
                    f"{paths[0]} has {video.shape[1]}"
                )
            pixels = [video[:, : spec.frames] if spec.which == "first" else video[:, -spec.frames :]]
        latents = []
        for clip in pixels:
            clip = clip[None].to(self.device, self.dtype)
            latents.append(self.vae.encode(clip, sample=True, generator=generator)[0])
        return latents

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        *,
        negative_prompt: str = "",
        cond_type: str = "t2v",
        reference: str | list[str] | None = None,
        num_frames: int | None = None,
        resolution: str | None = None,
        aspect_ratio: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_steps: int | None = None,
        guidance: float | None = None,
        guidance_img: float | None = None,
        motion_score: int | str | None = None,
        seed: int | None = None,
        noise_seed: int | None = None,
        num_samples: int = 1,
        text_osci: bool | None = None,
        image_osci: bool | None = None,
        scale_temporal_osci: bool | None = None,
        callback: StepCallback | None = None,
        cancel_event=None,
    ) -> GenerationResult:
        """Generate `num_samples` videos for one prompt.

        Args:
            prompt: what to show; the official FPS and motion-score suffixes are appended here.
            negative_prompt: text for the unconditional branches (the official default is "").
            cond_type: t2v, i2v_head, i2v_tail, i2v_loop, v2v_head, v2v_tail, v2v_head_easy,
                v2v_tail_easy (v2v_*_half are accepted as aliases of the _easy types).
            reference: image/video path(s) for the non-t2v types; i2v_loop takes "first;last".
            num_frames: 4k+1, at most 129. resolution / aspect_ratio: a bucket of the preset;
                height / width override the bucket (multiples of 16).
            num_steps, guidance, guidance_img, text_osci, image_osci, scale_temporal_osci:
                sampler settings (preset defaults when None).
            motion_score: 1-15, appended to the prompt as "<m> motion score." (None: preset default).
            seed: seeds everything (reference posterior sampling, and the noise unless
                `noise_seed` is given); sample k uses noise seed + k. None: a random seed, reported.
            callback: called after each step as callback(step_index, total_steps, latent (B,C,T,H,W)).
            cancel_event: anything with `is_set()`; checked between steps (raises GenerationCancelled).
        Returns:
            GenerationResult with the videos and the settings used for each.
        """
        started = time.time()
        preset, defaults = self.preset, self.preset.sampler
        if not prompt or not prompt.strip():
            raise UserError("the prompt is empty: describe the video to generate")
        cond_type = normalize_cond_type(cond_type)
        num_frames = check_num_frames(defaults.num_frames if num_frames is None else num_frames)
        resolution = resolution or defaults.resolution
        aspect_ratio = aspect_ratio or defaults.aspect_ratio
        height, width = self._pixel_size(resolution, aspect_ratio, height, width)
        num_steps = int(check_range("num_steps", defaults.num_steps if num_steps is None else num_steps, *RANGES["num_steps"]))
        guidance = float(check_range("guidance", defaults.guidance if guidance is None else guidance, *RANGES["guidance"]))
        guidance_img = float(
            check_range("guidance_img", defaults.guidance_img if guidance_img is None else guidance_img, *RANGES["guidance_img"])
        )
        check_range("num_samples", num_samples, *RANGES["num_samples"])
        motion = check_motion_score(defaults.motion_score if motion_score is None else motion_score)
        seed = random.randint(0, SEED_MAX) if seed is None else check_range("seed", seed, 0, SEED_MAX)
        noise_seed = seed if noise_seed is None else check_range("noise_seed", noise_seed, 0, SEED_MAX)
        options = GuidanceOptions(
            guidance=guidance,
            guidance_img=guidance_img,
            text_osci=defaults.text_osci if text_osci is None else text_osci,
            image_osci=defaults.image_osci if image_osci is None else image_osci,
            scale_temporal_osci=defaults.scale_temporal_osci if scale_temporal_osci is None else scale_temporal_osci,
        )

        # Latent grid (sampler_spec.md, section 2).
        latent_t = preset.vae.latent_frames(num_frames)
        latent_h, latent_w = height // preset.vae.spatial_compression, width // preset.vae.spatial_compression
        shape = (1, preset.mmdit.latent_channels, latent_t, latent_h, latent_w)

        text = model_prompt(prompt, defaults.fps, motion)
        txt, y_vec = self.text_encoder.encode([text, negative_prompt, negative_prompt])
        txt, y_vec = txt.to(self.dtype), y_vec.to(self.dtype)

        torch.manual_seed(seed)  # anything not given its own generator follows --seed
        ref_generator = torch.Generator(device="cpu").manual_seed(seed)
        ref_latents = self._encode_references(cond_type, reference, height, width, ref_generator)
        references = [ref_latents]

        result = GenerationResult(videos=[], settings=[])
        for k in range(num_samples):
            sample_seed = (noise_seed + k) % (SEED_MAX + 1)
            generator = torch.Generator(device="cpu").manual_seed(sample_seed)
            noise = torch.randn(shape, generator=generator, dtype=self.dtype).to(self.device)
            latent = self.sample(noise, txt, y_vec, cond_type, references, options, num_steps, callback, cancel_event)
            video = self.vae.decode(latent.to(self.dtype))[0, :, :num_frames].float().clamp(-1, 1).cpu()
            result.videos.append(video)
            result.latents.append(latent[0].float().cpu())
            result.settings.append(
                {
                    "preset": preset.name,
                    "prompt": prompt,
                    "model_prompt": text,
                    "negative_prompt": negative_prompt,
                    "cond_type": cond_type,
                    "reference": reference if reference is None or isinstance(reference, str) else list(map(str, reference)),
                    "num_frames": num_frames,
                    "resolution": resolution,
                    "aspect_ratio": aspect_ratio,
                    "height": height,
                    "width": width,
                    "fps": defaults.fps,
                    "num_steps": num_steps,
                    "motion_score": motion,
                    "seed": seed,
                    "noise_seed": sample_seed,
                    "sample_index": k,
                    "shift": defaults.shift,
                    "flow_shift": defaults.flow_shift,
                    "dtype": str(self.dtype).removeprefix("torch."),
                    "loras": [dict(lora) for lora in self.loras],
                    **asdict(options),
                    "seconds": round(time.time() - started, 3),
                }
            )
        return result

    def sample(
        self,
        noise: torch.Tensor,
        txt: torch.Tensor,
        y_vec: torch.Tensor,
        cond_type: str,
        references: list[list[torch.Tensor] | None],
        options: GuidanceOptions,
        num_steps: int,
        callback: StepCallback | None = None,
        cancel_event=None,
        start_step: int = 0,
    ) -> torch.Tensor:
        """Denoise `noise` (B, C, T, H, W) into the latent the VAE decodes (reference frames put back).
        From `start_step` > 0, `noise` is a latent noised to `schedule(...).sigmas[start_step]`.

        txt / y_vec hold 3B rows [prompts, negatives, negatives]; references[b] lists item b's
        reference latents.
        """
        p = self.preset.mmdit.patch_size
        _, _, latent_t, latent_h, latent_w = noise.shape
        cond = None
        if self.preset.mmdit.cond_embed:
            masks, masked_ref = prepare_condition(noise.shape, cond_type, references)
            cond = pack(torch.cat([masks, masked_ref], dim=1), p).to(self.device, self.dtype)
        img_ids = image_position_ids(latent_t, latent_h, latent_w, p).to(self.device)
        scheduler = self.schedule(noise.shape, num_steps)

        def latent_callback(step, total, packed):
            if callback is not None:
                callback(step, total, unpack(packed, p, latent_t, latent_h, latent_w))

        packed = denoise(
            self._model_fn, pack(noise, p), cond, txt, y_vec, img_ids, scheduler, options,
            temporal_ramp=options.scale_temporal_osci and cond_type.startswith("i2v"),
            latent_frames=latent_t, callback=latent_callback, cancel_event=cancel_event, start_step=start_step,
        )
        latent = unpack(packed, p, latent_t, latent_h, latent_w)
        return replace_reference_frames(latent, cond_type, references)

    def schedule(self, latent_shape: tuple[int, ...], num_steps: int):
        """The sampler's scheduler for a latent of `latent_shape` (B, C, T, H, W); its `sigmas` are the
        noise levels of the steps."""
        p = self.preset.mmdit.patch_size
        _, _, latent_t, latent_h, latent_w = latent_shape
        sampler = self.preset.sampler
        return make_scheduler(num_steps, (latent_h // p) * (latent_w // p), latent_t, sampler.shift, sampler.flow_shift)

    def _pixel_size(self, resolution, aspect_ratio, height, width) -> tuple[int, int]:
        if height is None and width is None:
            return self.preset.image_size(resolution, aspect_ratio)
        unit = self.preset.spatial_unit
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value < unit or value % unit or value > 4096:
                raise UserError(
                    f"{name} {value!r} is not allowed: give both height and width as multiples of {unit} "
                    f"between {unit} and 4096"
                )
        return height, width
