"""OpenSoraV12Pipeline: prompt (+ reference) -> videos with Open-Sora 1.2 (STDiT3, the v1.2 VAE,
the masked T5, rectified flow), behind the same interface as `OpenSoraPipeline`:

    pipe = OpenSoraV12Pipeline.from_preset("tiny-random-v1-2")
    result = pipe("a cat", num_frames=34, seed=42)
    result.videos[0]  # (3, 34, 32, 64) float in [-1, 1]

The CLI and the app reach it through `opensora.pipeline_cache.PipelineCache.get`, which picks the
pipeline class by the preset's family.
"""

import time
from pathlib import Path

import torch

from opensora.devices import parse_dtype
from opensora.errors import UserError
from opensora.generation_settings import GenerationSettings, video_record
from opensora.io.reference import load_reference, load_reference_frame
from opensora.loading_v1_2 import load_components_v1_2
from opensora.pipeline import GenerationResult
from opensora.presets import Preset, load_preset
from opensora.refine import PreparedPrompt
from opensora.sampling.mask_strategy import reference_spec_v1_2
from opensora.sampling.prompt_v1_2 import t5_prompt
from opensora.sampling.rflow_v1_2 import RFlowSettings, StepCallback, sample_v1_2


class OpenSoraV12Pipeline:
    def __init__(self, preset: Preset, transformer, vae, text_encoder, device="cpu", dtype=torch.float32):
        self.preset, self.transformer, self.vae, self.text_encoder = preset, transformer, vae, text_encoder
        self.device, self.dtype = torch.device(device), dtype
        self.loras: list[dict] = []  # always empty: LoRAs are Open-Sora 2.0 only

    @classmethod
    def from_preset(cls, preset: str | Preset, ckpt_dir=None, device="cpu", dtype: str | torch.dtype = "fp32"):
        preset = preset if isinstance(preset, Preset) else load_preset(preset)
        dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
        transformer, vae, text = load_components_v1_2(preset, ckpt_dir, device, dtype)
        return cls(preset, transformer, vae, text, device, dtype)

    def load_lora(self, path: str | Path, scale: float = 1.0) -> None:
        raise UserError(f"LoRAs are for Open-Sora 2.0 presets (made by `python -m training finetune`); preset "
                        f"{self.preset.name} is {self.preset.family_name}, so {path} cannot be merged into it")

    def unload_loras(self) -> None:
        """Nothing to restore (no LoRA is ever merged)."""

    # ----------------------------------------------------------------------------------------
    def _reference_pixels(self, settings: GenerationSettings) -> list[torch.Tensor]:
        """(3, T, H, W) clips at the requested size (resize + centre crop): per the cond type, or for
        t2v with a raw mask strategy each file whole, as the official loader reads them."""
        paths = [Path(p) for p in settings.reference]
        h, w = settings.height, settings.width
        spec = reference_spec_v1_2(settings.cond_type)
        if spec is None:
            return [load_reference(p, h, w) for p in paths]
        if spec.paths == "first_and_last":
            return [load_reference_frame(paths[0], "first", h, w), load_reference_frame(paths[-1], "last", h, w)]
        if spec.frames == 1:
            return [load_reference_frame(paths[0] if spec.paths == "first" else paths[-1], spec.which, h, w)]
        video = load_reference(paths[0], h, w)
        if video.shape[1] < spec.frames:
            raise UserError(f"{settings.cond_type} needs a reference video of at least {spec.frames} frames; "
                            f"{paths[0]} has {video.shape[1]}")
        return [video[:, : spec.frames] if spec.which == "first" else video[:, -spec.frames :]]

    def _encode_references(self, settings: GenerationSettings, generator: torch.Generator) -> list[torch.Tensor]:
        """Reference latents (4, T_ref, h, w): posterior samples, as the official `vae.encode`."""
        return [self.vae.encode(clip[None].to(self.device, self.dtype), True, generator)[0]
                for clip in self._reference_pixels(settings)]

    def t5_text(self, settings: GenerationSettings, prepared: PreparedPrompt) -> str:
        """The exact string T5 reads: the (refined) prompt with the official score suffixes, cleaned."""
        return t5_prompt(prepared.text, settings.aesthetic_score, settings.motion_score, settings.camera_motion)

    def __call__(
        self,
        prompt: str,
        *,
        cond_type: str = "t2v",
        reference: str | list[str] | None = None,
        mask_strategy: str | None = None,
        num_frames: int | str | None = None,
        resolution: str | None = None,
        aspect_ratio: str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_steps: int | None = None,
        guidance: float | None = None,
        aesthetic_score: float | str | None = None,
        motion_score: float | str | None = None,
        camera_motion: str | None = None,
        seed: int | None = None,
        noise_seed: int | None = None,
        num_samples: int = 1,
        callback: StepCallback | None = None,
        cancel_event=None,
    ) -> GenerationResult:
        """Generate `num_samples` videos for one prompt (the Python API; the CLI and the app go
        through `opensora.runner`, which also writes the files).

        Args:
            prompt: what to show; the official score suffixes are appended and the text cleaned as
                the official inference does (`GenerationResult.settings[k]["model_prompt"]`).
            cond_type: t2v, i2v_head, i2v_tail, i2v_loop, v2v_head, v2v_tail (the v2v types keep
                17 frames of the reference video). reference: image/video path(s); i2v_loop takes
                "first;last".
            mask_strategy: a raw official strategy ("0;0,1,0,-1,1"); wins over cond_type's.
            num_frames: 1, or 17 up to the preset's max (no 4k+1 rule), or a named length ("4s").
            resolution / aspect_ratio: a bucket of the preset (16:9 = landscape, as in 2.0; the
                official H:W name goes into the sidecar); height / width (both) replace it.
            num_steps, guidance: rectified-flow steps and cfg scale (preset defaults when None).
            aesthetic_score, motion_score (the official --flow), camera_motion: the score
                conditioning written into the prompt; "none" leaves one out.
            seed: seeds the reference encoding and the noise (unless `noise_seed`); sample k is
                made as a one-sample call with seed + k. None: a random seed, reported.
            callback: called after each step as callback(step_index, total_steps, latent (B,C,T,H,W)).
            cancel_event: anything with `is_set()`; checked between steps (raises GenerationCancelled).
        """
        from opensora.generation_settings import GenerationRequest, resolve_settings
        from opensora.generation_settings_v1_2 import prompt_motion_score
        from opensora.refine import prepare_prompt

        request = GenerationRequest(
            prompt=prompt, preset=self.preset.name, cond_type=cond_type, reference=reference or [],
            mask_strategy=mask_strategy, num_frames=num_frames, resolution=resolution, aspect_ratio=aspect_ratio,
            height=height, width=width, num_steps=num_steps, guidance=guidance, aesthetic_score=aesthetic_score,
            motion_score=motion_score, camera_motion=camera_motion, seed=seed, noise_seed=noise_seed,
            num_samples=num_samples,
        )
        settings = resolve_settings(request, self.preset)
        prepared = prepare_prompt(settings.prompt, refine=False, motion_score=prompt_motion_score(settings),
                                  vocabulary=self.preset.prompt.vocabulary)
        return self.generate(settings, prepared, callback, cancel_event)

    @torch.no_grad()
    def generate(
        self,
        settings: GenerationSettings,
        prepared: PreparedPrompt,
        callback: StepCallback | None = None,
        cancel_event=None,
        on_message=None,
    ) -> GenerationResult:
        """The videos of resolved `settings` (see `opensora.generation_settings`) from the text of
        `prepared` (its 2.0 suffixes and motion score are not used). `on_message` is accepted for the
        common interface; nothing runs here besides the steps."""
        started = time.time()
        if settings.preset != self.preset.name:
            raise UserError(f"settings are for preset {settings.preset}; this pipeline runs {self.preset.name}")
        text = self.t5_text(settings, prepared)
        y, y_mask = self.text_encoder.encode([text])
        y = y.to(self.dtype)
        latent_shape = (1, self.preset.vae.latent_channels, *self.vae.latent_size(settings.num_frames, settings.height,
                                                                                    settings.width))
        result = GenerationResult(videos=[], settings=[])
        for k in range(settings.num_samples):
            one = settings.sample(k)
            torch.manual_seed(one.seed)  # anything not given its own generator follows the seed
            references = self._encode_references(one, torch.Generator(device="cpu").manual_seed(one.seed))
            noise_seed = one.seed if one.noise_seed is None else one.noise_seed
            # One CPU generator for the noise, then the per-step re-noising draws (as the official
            # global RNG after its noise): the same numbers on every device.
            generator = torch.Generator(device="cpu").manual_seed(noise_seed)
            noise = torch.randn(latent_shape, generator=generator, dtype=torch.float32).to(self.device, self.dtype)
            rflow = RFlowSettings(
                height=one.height, width=one.width, num_frames=one.num_frames, fps=one.fps, num_steps=one.num_steps,
                cfg_scale=one.guidance, use_timestep_transform=self.preset.sampler.use_timestep_transform,
                align=one.align,
            )
            latent = sample_v1_2(self.transformer, y, y_mask, noise, [references], [one.mask_strategy], rflow,
                                 generator=generator, callback=callback, cancel_event=cancel_event)
            video = self.vae.decode(latent.to(self.dtype), one.num_frames)[0].float().clamp(-1, 1).cpu()
            result.videos.append(video)
            result.latents.append(latent[0].float().cpu())
            result.settings.append(self._record(one, prepared, text, video, k, time.time() - started))
        return result

    def _record(self, one: GenerationSettings, prepared: PreparedPrompt, text: str, video: torch.Tensor,
                index: int, seconds: float) -> dict:
        """The sidecar: the common record, with the T5 string as the model prompt and what 1.2 adds."""
        record = video_record(one, prepared, sample_index=index, dtype=self.dtype, loras=[], seconds=seconds)
        for key in ("motion_score", "motion_source"):  # the 2.0 prompt suffix's, unused here
            record["prompt_handling"].pop(key, None)
        record.update(
            model_prompt=text, official_aspect_ratio=self.preset.official_aspect_ratio.get(one.aspect_ratio),
            decoded_height=int(video.shape[2]), decoded_width=int(video.shape[3]),
        )
        return record
