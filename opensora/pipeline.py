"""OpenSoraPipeline: prompt (+ reference) -> videos, the one object the CLI, UI and API call.

    pipe = OpenSoraPipeline.from_preset("tiny-random")
    result = pipe("a cat", num_frames=9, aspect_ratio="16:9", seed=42)
    result.videos[0]  # (3, T, H, W) float in [-1, 1]

How it runs on this machine is `runtime` (opensora.pipeline_cache.RuntimeOptions): the memory
profile, T5 quantisation, fp8 weights, the attention kernel. The pipeline cache loads the
components on the CPU, merges the job's LoRAs, and the first generation places them (`place`):

    encode (T5, CLIP) -> [FLUX first frame] -> VAE encodes references -> sample (MMDiT) -> VAE decode

each phase inside the memory profile's context (`opensora.offload`), which brings a swapped
component onto the device for its phase only. Under torchrun (several ranks) the MMDiT's image
tokens are split over the ranks: rank 0 prepares each sample's inputs and sends them
(`opensora.parallel.jobs`), every rank samples, rank 0 decodes.
"""

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from opensora.devices import dtype_name, parse_dtype
from opensora.errors import UserError
from opensora.generation_settings import GenerationSettings, video_record
from opensora.io.reference import load_reference, load_reference_frame
from opensora.loading import load_components, load_flux
from opensora.models.mmdit import mmdit_forward
from opensora.offload import phase_context, release_memory
from opensora.parallel.sequence import sharded_mmdit_forward
from opensora.pipeline_cache import RuntimeOptions
from opensora.presets import Preset, load_preset
from opensora.refine import PreparedPrompt
from opensora.sampling.cache_spec import CacheSpec, parse_cache_spec, read_mag_ratios
from opensora.sampling.compiled_blocks import CompiledBlocks, compile_unavailable_reason, report_compiles
from opensora.sampling.conditioning import prepare_condition, reference_spec, replace_reference_frames
from opensora.sampling.denoise import GuidanceOptions, StepCallback, denoise
from opensora.sampling.packing import image_position_ids, pack, unpack
from opensora.sampling.schedule import make_scheduler
from opensora.sampling.step_cache import StepCache
from opensora.t2i2v import draw_first_frame, first_frame_reference


@dataclass
class GenerationResult:
    videos: list[torch.Tensor]  # one (3, T, H, W) tensor in [-1, 1] per sample
    settings: list[dict]  # everything needed to reproduce each video (the sidecar)
    latents: list[torch.Tensor] = field(default_factory=list)
    # Text -> image -> video: each video's FLUX first frame (3, H, W) in [-1, 1], at the image size
    # (None for a video made without one); empty when no video of the result had one.
    images: list[torch.Tensor | None] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # what the user should know about the run (compile time)


class OpenSoraPipeline:
    def __init__(self, preset: Preset, transformer, vae, text_encoder, device="cpu", dtype=torch.float32,
                 flux=None, ckpt_dir=None):
        """flux: (transformer, autoencoder) of the preset's text -> image -> video stage, or None to load
        it from `ckpt_dir` on the first request that needs it."""
        self.preset, self.transformer, self.vae, self.text_encoder = preset, transformer, vae, text_encoder
        self.device, self.dtype = torch.device(device), dtype
        self.flux, self.ckpt_dir = flux, ckpt_dir
        self.loras: list[dict] = []  # {"path", "scale"} of each merged LoRA, in load order
        self._unmerged_weights: dict[str, torch.Tensor] = {}  # weights as they were before any LoRA
        self.runtime = RuntimeOptions(device=str(self.device), dtype=dtype_name(dtype), offload="none")
        self.offload = None  # the applied memory profile (opensora.offload.Offload), once placed
        self.sequence_parallel = 1  # torchrun ranks sharing the MMDiT's image tokens
        self.runtime_record: dict = {}  # how it ran, for each video's sidecar (`runtime`)
        self.compiled_blocks: CompiledBlocks | None = None  # --compile: made on first use, kept with the model

    @classmethod
    def from_preset(cls, preset: str | Preset, ckpt_dir=None, device="cpu", dtype: str | torch.dtype = "fp32",
                    runtime: RuntimeOptions | None = None):
        """runtime: how it will run (opensora.pipeline_cache.RuntimeOptions, its offload a profile name);
        given, the components load on the CPU and are placed on `device` by the first generation, after
        any LoRA merge. None: they load on `device`, everything resident (profile none)."""
        preset = preset if isinstance(preset, Preset) else load_preset(preset)
        dtype = parse_dtype(dtype) if isinstance(dtype, str) else dtype
        quant = runtime.text_encoder_quant if runtime is not None else None
        transformer, vae, text = load_components(preset, ckpt_dir, "cpu" if runtime else device, dtype,
                                                 text_encoder_quant=quant)
        pipe = cls(preset, transformer, vae, text, device, dtype, ckpt_dir=ckpt_dir)
        if runtime is not None:
            pipe.runtime = replace(runtime, device=str(pipe.device), dtype=dtype_name(dtype))
        return pipe

    def place(self) -> None:
        """Put the components where `runtime` says, once, after loading and LoRA merging (the first
        generation calls it): the attention split over torchrun ranks when there are several, the
        attention kernel, then the memory profile (placement, offload hooks, fp8 storage, VAE tiling)."""
        if self.offload is not None:
            return
        from opensora.offload import apply_offload
        from opensora.parallel.attention_backend import apply_attention_backend, resolve_attention_backend
        from opensora.memory.profiles import memory_profile
        from opensora.parallel.process_group import rank, world_size

        runtime = self.runtime
        profile = "none" if runtime.offload == "auto" else runtime.offload  # the cache resolves auto per job
        if world_size() > 1:
            from opensora.parallel.ulysses import enable_sequence_parallel

            enable_sequence_parallel(self.transformer)
            self.sequence_parallel = world_size()
        attention = resolve_attention_backend(runtime.attention, self.device, self.dtype)
        if attention != "sdpa":  # sdpa is diffusers' default: setting it only logs an "experimental" warning
            apply_attention_backend(self.transformer, attention, self.device, self.dtype)
        placement = memory_profile(profile)
        if self.sequence_parallel > 1 and rank() != 0:
            # The other ranks only sample: T5, CLIP and the VAE wait in host RAM, off their GPU.
            placement = replace(placement, encoders="swap", vae="swap")
        self.offload = apply_offload(self, placement, self.device, offload_dir=runtime.offload_dir,
                                     fp8_mmdit=runtime.fp8_mmdit)
        self.runtime_record = {
            "device": str(self.device), "offload": profile, "text_encoder_quant": runtime.text_encoder_quant,
            "fp8_mmdit": runtime.fp8_mmdit, "attention": attention,
            "vae_temporal_tiling": bool(getattr(self.vae, "temporal_tiling", False)),
            "sequence_parallel": self.sequence_parallel,
        }

    @property
    def weights_editable(self) -> bool:
        """Whether LoRAs can be merged or taken out now: before placement, or under a profile that keeps
        the MMDiT's weights whole and in the dtype (not offload hooks, not fp8)."""
        if self.offload is None:
            return True
        return self.offload.profile.mmdit in ("resident", "swap") and not self.runtime.fp8_mmdit

    def _check_weights_editable(self) -> None:
        if not self.weights_editable:
            raise UserError(f"LoRAs are merged before memory profile {self.runtime_record['offload']}"
                            f"{' with fp8 weights' if self.runtime.fp8_mmdit else ''} is applied: load the pipeline "
                            "again to change them (the pipeline cache does)")

    def close(self) -> None:
        """Release what the memory profile made outside the process (the disk profile's block files)."""
        if self.offload is not None:
            self.offload.close()

    def load_flux(self, on_message=None):
        """(transformer, autoencoder) of FLUX, loaded on first use (12B parameters that a plain t2v or
        i2v run never needs)."""
        if self.flux is None:
            if on_message is not None:
                on_message(f"loading FLUX for text -> image -> video on {self.device}")
            self.flux = load_flux(self.preset, self.ckpt_dir, str(self.device), self.dtype)
        return self.flux

    # ----------------------------------------------------------------------------------------
    def load_lora(self, path: str | Path, scale: float = 1.0) -> None:
        """Merge a LoRA from `python -m training finetune` into the MMDiT: W += scale * (alpha/r) * B @ A.

        Several LoRAs stack; `unload_loras()` restores the weights exactly as loaded.
        """
        from opensora.lora import check_lora_fits, check_scale, lora_delta, read_lora_file

        check_scale(scale)
        self._check_weights_editable()
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
        if self._unmerged_weights:
            self._check_weights_editable()
        layers = dict(self.transformer.named_modules())
        with torch.no_grad():
            for module, original in self._unmerged_weights.items():
                layers[module].weight.copy_(original)
        self._unmerged_weights.clear()
        self.loras.clear()

    def _model_fn(self, img, cond, txt, y_vec, timesteps, img_ids):
        if self.sequence_parallel > 1:
            return sharded_mmdit_forward(self.transformer, img, cond, txt, y_vec, timesteps, img_ids)
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
        return self._encode_pixels(pixels, generator)

    def _encode_pixels(self, pixels: list[torch.Tensor], generator) -> list[torch.Tensor]:
        """Reference latents of (3, T, H, W) clips: a posterior sample, as the official loader encodes."""
        latents = []
        for clip in pixels:
            clip = clip[None].to(self.device, self.dtype)
            latents.append(self.vae.encode(clip, sample=True, generator=generator)[0])
        return latents

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
        motion_score: int | None = None,
        seed: int | None = None,
        noise_seed: int | None = None,
        num_samples: int = 1,
        text_osci: bool | None = None,
        image_osci: bool | None = None,
        scale_temporal_osci: bool | None = None,
        use_t2i2v: bool | None = None,
        image_resolution: str | None = None,
        speed: str | None = None,
        cache: str | None = None,
        compile: bool = False,
        callback: StepCallback | None = None,
        cancel_event=None,
    ) -> GenerationResult:
        """Generate `num_samples` videos for one prompt (the Python API; the CLI and the app go
        through `opensora.runner`, which also writes the files).

        Args:
            prompt: what to show; the official FPS and motion-score suffixes are appended. A preset
                with a prompt vocabulary (the demo) maps it onto that vocabulary first.
            negative_prompt: text for the unconditional branches (the official default is "").
            cond_type: t2v, i2v_head, i2v_tail, i2v_loop, v2v_head, v2v_tail, v2v_head_easy,
                v2v_tail_easy (v2v_*_half are accepted as aliases of the _easy types).
            reference: image/video path(s) for the non-t2v types; i2v_loop takes "first;last".
            num_frames: 4k+1, at most the preset's limit. resolution / aspect_ratio: a bucket of
                the preset ("auto": the one closest to the reference); height / width (both)
                replace the bucket.
            num_steps, guidance, guidance_img, text_osci, image_osci, scale_temporal_osci:
                sampler settings (preset defaults when None).
            motion_score: 1-15, appended to the prompt as "<m> motion score." (None: preset default).
            use_t2i2v: text -> image -> video (t2v only): FLUX draws the first frame from the prompt at
                `image_resolution` (a bucket table; None: the preset's), the video starts on it
                (i2v_head); `GenerationResult.images` holds it. None: the preset's default.
            speed: quality (None: the default), balanced or fast: the step cache of the preset's [speed].
            cache: an explicit step cache "NAME[:PARAM=V,...]" (opensora.sampling.cache_spec; wins over speed).
            compile: torch.compile the MMDiT's repeated blocks (compiled once, kept with the pipeline).
            seed: seeds everything (reference posterior sampling, and the noise unless
                `noise_seed` is given); sample k is made as a one-sample call with seed + k.
                None: a random seed, reported.
            callback: called after each step as callback(step_index, total_steps, latent (B,C,T,H,W)).
                One with a `prediction(step_index, total_steps, clean_latent)` method also hears each step
                just before it; clean_latent() returns the clean latent (B,C,T,H,W) the step predicts.
            cancel_event: anything with `is_set()`; checked between steps (raises GenerationCancelled).
        Returns:
            GenerationResult with the videos and each one's sidecar settings.
        """
        from opensora.generation_settings import GenerationRequest, resolve_settings
        from opensora.refine import prepare_prompt

        request = GenerationRequest(
            prompt=prompt, preset=self.preset.name, negative_prompt=negative_prompt, cond_type=cond_type,
            reference=reference, num_frames=num_frames, resolution=resolution, aspect_ratio=aspect_ratio,
            height=height, width=width, num_steps=num_steps, guidance=guidance, guidance_img=guidance_img,
            text_osci=text_osci, image_osci=image_osci, scale_temporal_osci=scale_temporal_osci,
            motion_score=motion_score, seed=seed, noise_seed=noise_seed, num_samples=num_samples,
            use_t2i2v=use_t2i2v, image_resolution=image_resolution, speed=speed, cache=cache, compile=compile,
        )
        settings = resolve_settings(request, self.preset)
        prepared = prepare_prompt(settings.prompt, refine=False, motion_score=settings.motion_score,
                                  vocabulary=self.preset.prompt.vocabulary, fps=settings.fps)
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
        """The videos of resolved `settings` (see `opensora.generation_settings`), with the encoder
        text of `prepared` (whose motion score is the one used). `on_message(text)` hears what runs
        besides the video's steps (loading and drawing the text -> image -> video first frame)."""
        started = time.time()
        if settings.preset != self.preset.name:
            raise UserError(f"settings are for preset {settings.preset}; this pipeline runs {self.preset.name}")
        settings = replace(settings, motion_score=prepared.motion_score)
        options = GuidanceOptions(
            guidance=settings.guidance, guidance_img=settings.guidance_img, text_osci=settings.text_osci,
            image_osci=settings.image_osci, scale_temporal_osci=settings.scale_temporal_osci,
        )
        vae = self.preset.vae
        latent_t = vae.latent_frames(settings.num_frames)
        shape = (1, self.preset.mmdit.latent_channels, latent_t,
                 settings.height // vae.spatial_compression, settings.width // vae.spatial_compression)

        self.place()
        negative = settings.negative_prompt
        with phase_context(self.offload, "encode"):
            txt, y_vec = self.text_encoder.encode([prepared.model_text, negative, negative])
            if settings.use_t2i2v:
                # The image prompt: no FPS / motion suffixes, through the same T5 / CLIP.
                image_txt, image_vec = self.text_encoder.encode([prepared.text])
        txt, y_vec = txt.to(self.device, self.dtype), y_vec.to(self.device, self.dtype)
        if settings.use_t2i2v:
            flux = self.load_flux(on_message)
        self.set_compiled(settings.compile)
        cache = parse_cache_spec(settings.cache)

        result = GenerationResult(videos=[], settings=[])
        for k in range(settings.num_samples):
            one = settings.sample(k)
            torch.manual_seed(one.seed)  # anything not given its own generator follows the seed
            ref_generator = torch.Generator(device="cpu").manual_seed(one.seed)
            cond_type, image = one.cond_type, None
            if one.use_t2i2v:
                image = draw_first_frame(flux, image_txt, image_vec, self.preset, one, on_message, cancel_event)
                cond_type = "i2v_head"  # the official t2i2v: the video starts on the drawn image
                with phase_context(self.offload, "decode"):  # the VAE's phase: it encodes the references too
                    references = [self._encode_pixels([first_frame_reference(image, one.height, one.width)],
                                                      ref_generator)]
            else:
                with phase_context(self.offload if reference_spec(cond_type) else None, "decode"):
                    references = [self._encode_references(cond_type, one.reference, one.height, one.width,
                                                          ref_generator)]
            noise_seed = one.seed if one.noise_seed is None else one.noise_seed
            generator = torch.Generator(device="cpu").manual_seed(noise_seed)
            noise = torch.randn(shape, generator=generator, dtype=self.dtype).to(self.device)
            with report_compiles(result.notices.append if settings.compile else None, on_message):
                latent = self._sample_on_all_ranks(noise, txt, y_vec, cond_type, references, options, one.num_steps,
                                                   callback, cancel_event, cache=cache)
            with phase_context(self.offload, "decode"):
                video = self.vae.decode(latent.to(self.dtype))[0, :, : one.num_frames].float().clamp(-1, 1).cpu()
            result.videos.append(video)
            result.latents.append(latent[0].float().cpu())
            if settings.use_t2i2v:
                result.images.append(image)
            result.settings.append(video_record(one, prepared, sample_index=k, dtype=self.dtype,
                                                loras=self.loras, seconds=time.time() - started,
                                                runtime=self.runtime_record))
        release_memory(self.device)  # no growth over repeated generations
        return result

    def _sample_on_all_ranks(self, noise, txt, y_vec, cond_type, references, options, num_steps, callback,
                             cancel_event, cache: CacheSpec | None = None) -> torch.Tensor:
        """`sample` in the memory profile's sample phase; with sequence parallel rank 0 (the only rank
        that calls `generate`) first sends the inputs to the other ranks (`follow_sample`)."""
        if self.sequence_parallel > 1:
            from opensora.parallel.jobs import SharedCancel, send_sample

            if cache is not None and cache.method == "first-block":
                raise UserError("cache first-block decides from each rank's own image tokens, so the ranks would "
                                "disagree under torchrun; use taylorseer, magcache, pab or fastercache")
            send_sample({"cond_type": cond_type, "num_steps": num_steps, "guidance": asdict(options),
                         "cache": cache.text if cache else ""},
                        [noise, txt, y_vec, *references[0]], self.device)
            cancel_event = SharedCancel(cancel_event)
        with phase_context(self.offload, "sample"):
            return self.sample(noise, txt, y_vec, cond_type, references, options, num_steps, callback, cancel_event,
                               cache=cache)

    def follow_sample(self, meta: dict, tensors: list[torch.Tensor]) -> None:
        """Ranks other than 0: the denoise loop of rank 0's sample (`send_sample` made `meta` and
        `tensors`); its share of the all-to-all attention is all it contributes."""
        from opensora.parallel.jobs import SharedCancel

        self.place()
        noise, txt, y_vec, *references = tensors
        with phase_context(self.offload, "sample"):
            self.sample(noise, txt, y_vec, meta["cond_type"], [references], GuidanceOptions(**meta["guidance"]),
                        meta["num_steps"], None, SharedCancel(None), cache=parse_cache_spec(meta.get("cache", "")))

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
        cache: CacheSpec | None = None,
    ) -> torch.Tensor:
        """Denoise `noise` (B, C, T, H, W) into the latent the VAE decodes (reference frames put back).
        From `start_step` > 0, `noise` is a latent noised to `schedule(...).sigmas[start_step]`.
        `cache`: a step cache on for this loop only (opensora.sampling.step_cache), None: every step computed.

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

        # A callback with a `prediction(step, total, clean_latent)` method also hears each step before it
        # runs: clean_latent() returns the predicted x0 (B, C, T, H, W) (the live preview, opensora/preview).
        wants_prediction = callable(getattr(callback, "prediction", None))

        def prediction_callback(step, total, clean_packed):
            callback.prediction(step, total, lambda: unpack(clean_packed(), p, latent_t, latent_h, latent_w))

        ratios = None
        if cache is not None and cache.method == "magcache":
            ratios = read_mag_ratios(self.preset.name, self.preset.path.parent)  # the preset's calibration
        with StepCache(self.transformer, cache, num_steps, ratios) as step_cache:  # hooks gone again after
            packed = denoise(
                step_cache.watch(self._model_fn), pack(noise, p), cond, txt, y_vec, img_ids, scheduler, options,
                temporal_ramp=options.scale_temporal_osci and cond_type.startswith("i2v"),
                latent_frames=latent_t, callback=latent_callback, cancel_event=cancel_event, start_step=start_step,
                prediction=prediction_callback if wants_prediction else None,
            )
        latent = unpack(packed, p, latent_t, latent_h, latent_w)
        return replace_reference_frames(latent, cond_type, references)

    def set_compiled(self, on: bool) -> None:
        """--compile: the MMDiT's repeated blocks compiled (on first use) or back to eager; the compiled
        code stays with this pipeline, so the pipeline cache's next generation of the same size reuses it."""
        if on and self.compiled_blocks is None:
            reason = compile_unavailable_reason(str(self.device))
            if reason:
                raise UserError(f"compile (torch.compile of the MMDiT blocks) cannot run here: {reason}; "
                                "generate without it")
            self.compiled_blocks = CompiledBlocks(self.transformer)
        if self.compiled_blocks is not None:
            self.compiled_blocks.set(on)

    def schedule(self, latent_shape: tuple[int, ...], num_steps: int):
        """The sampler's scheduler for a latent of `latent_shape` (B, C, T, H, W); its `sigmas` are the
        noise levels of the steps."""
        p = self.preset.mmdit.patch_size
        _, _, latent_t, latent_h, latent_w = latent_shape
        sampler = self.preset.sampler
        return make_scheduler(num_steps, (latent_h // p) * (latent_w // p), latent_t, sampler.shift, sampler.flow_shift)
