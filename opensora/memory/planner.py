"""Predict peak accelerator memory and peak host RAM of one generation, per memory profile, before
anything is loaded; pick the fastest profile that fits.

Weights come from parameter counts on the meta device (opensora/memory/sizes.py) times the bytes
of their dtype; activations from the token count. The constants of the formulas are data
([planner] in presets/profiles/memory.toml), measured on CPU runs (bench/memory.py):

  MMDiT activations  = mmdit_activation_factor x 3 (guidance rows) x (image + text tokens) x hidden x bytes
  VAE decode         = vae_activation_factor x tile frames x tile height x tile width x decoder width x bytes
                       + 2.5 x the decoded video in fp32 (the tiles and the blended copy)
  T5 activations     = 8 x 3 x text tokens x width x bytes
  FLUX image         = the MMDiT formula with 1 row (no CFG) over the image's tokens, plus the VAE
                       formula for one untiled frame through the FLUX decoder (text -> image -> video)
  CPU runs add host_workspace_gb (kernel workspaces, allocator slack) to every compute phase.

The Video DC-AE decodes in its own tiles (official 256 px, 32 frames); its factor is the HunyuanVideo
VAE's (not measured for the DC-AE). FLUX, once loaded for text -> image -> video, stays resident
(the pipeline keeps it; no memory profile offloads it yet), so it counts in every phase.

A phase's need is what is resident during it plus its activations; the peak is the largest phase.
Host RAM also counts loading: the MMDiT passes through host memory in full once (no profile
streams it from the checkpoint yet), and CUDA-stream prefetch pins a second host copy of it.
"""

from dataclasses import dataclass, field, replace
from pathlib import Path

from opensora.configs import DCAEConfig
from opensora.errors import UserError
from opensora.memory.profiles import MemoryProfile, PlannerConstants, load_memory_profiles, planner_constants
from opensora.memory.sizes import ComponentSizes, EncoderSizes, component_sizes
from opensora.presets import Preset

GIB = 2**30
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


@dataclass(frozen=True)
class PlanRequest:
    preset: Preset
    num_frames: int
    height: int
    width: int
    num_samples: int = 1
    device: str = "cuda"  # "cuda": GPU memory + host RAM; "cpu": host RAM only
    dtype: str = "bf16"
    text_encoder_quant: str | None = None  # None, "int8", "nf4"
    fp8_mmdit: bool = False
    ckpt_root: Path | None = None  # where the encoders' config.json can be read, if anywhere
    sequence_parallel: int = 1  # torchrun ranks splitting the image tokens (each holds all weights)
    t2i2v_image: tuple[int, int] | None = None  # (height, width) of the FLUX first frame; None: no T2I2V


@dataclass(frozen=True)
class ProfilePrediction:
    profile: str
    gpu_gib: float | None  # None on a CPU run
    ram_gib: float
    relative_time: float
    phases: dict = field(default_factory=dict)  # phase -> (gpu bytes, host bytes), for the curious


@dataclass(frozen=True)
class Plan:
    request: PlanRequest
    rows: list[ProfilePrediction]

    def fitting(self, vram_gib: float | None, ram_gib: float | None) -> list[ProfilePrediction]:
        def fits(row: ProfilePrediction) -> bool:
            gpu_ok = row.gpu_gib is None or vram_gib is None or row.gpu_gib <= vram_gib
            return gpu_ok and (ram_gib is None or row.ram_gib <= ram_gib)

        return sorted((row for row in self.rows if fits(row)), key=lambda row: row.relative_time)

    def choose(self, vram_gib: float | None, ram_gib: float | None) -> ProfilePrediction | None:
        """The fastest profile that fits (None: none does)."""
        fitting = self.fitting(vram_gib, ram_gib)
        return fitting[0] if fitting else None


def latent_tokens(request: PlanRequest) -> int:
    preset = request.preset
    unit = preset.spatial_unit
    return preset.vae.latent_frames(request.num_frames) * (request.height // unit) * (request.width // unit)


def _encoder_bytes(sizes: EncoderSizes, dtype_bytes: int, quant: str | None) -> int:
    if quant is None:
        return sizes.params * dtype_bytes
    rest = (sizes.params - sizes.quantizable) * dtype_bytes
    if quant == "int8":
        return rest + sizes.quantizable + 4 * sizes.quantizable_rows  # int8 weights + one fp32 scale per row
    return rest + sizes.quantizable // 2 + 4 * (sizes.quantizable // 64)  # nf4: 4 bits + an fp32 absmax per 64


@dataclass(frozen=True)
class _Bytes:
    """Everything the phases are made of, in bytes."""

    mmdit: int
    mmdit_block: int
    mmdit_outside: int
    mmdit_leaf: int
    t5: int
    clip: int
    encoder_leaf: int
    vae: int
    mmdit_activations: int
    encoder_activations: int
    vae_decode: int
    videos: int  # decoded videos kept until written (fp32 on the host)
    flux: int = 0  # FLUX transformer + autoencoder, with text -> image -> video
    flux_activations: int = 0


def _sizes_in_bytes(request: PlanRequest, sizes: ComponentSizes, consts: PlannerConstants, profile: MemoryProfile) -> _Bytes:
    b = DTYPE_BYTES[request.dtype]
    mmdit = sizes.mmdit
    if request.fp8_mmdit:
        weights = mmdit.fp8_params + (mmdit.params - mmdit.fp8_params) * b
        block = mmdit.fp8_largest_block + (mmdit.largest_block - mmdit.fp8_largest_block) * b
    else:
        weights, block = mmdit.params * b, mmdit.largest_block * b
    text_tokens = request.preset.text.t5_max_length
    tokens = latent_tokens(request) + text_tokens
    vae_config = request.preset.vae
    frames = request.num_frames
    tile_h, tile_w = request.height, request.width
    if isinstance(vae_config, DCAEConfig):  # the DC-AE tiles itself, in space and time
        if vae_config.temporal_tiling:
            frames = min(frames, vae_config.temporal_tile_size)
        if vae_config.spatial_tiling:
            tile_h, tile_w = min(tile_h, vae_config.spatial_tile_size), min(tile_w, vae_config.spatial_tile_size)
    else:
        if profile.vae_temporal_tiling:
            frames = min(frames, consts.vae_tile_frames + 1)
        if vae_config.spatial_tiling:
            tile_h, tile_w = min(tile_h, vae_config.tile_size), min(tile_w, vae_config.tile_size)
    video = 3 * request.num_frames * request.height * request.width * 4
    flux = {}
    if request.t2i2v_image is not None and sizes.flux is not None:
        image_h, image_w = request.t2i2v_image
        image_tokens = (image_h // 16) * (image_w // 16)  # 8x VAE, 2x2 patches
        flux = dict(
            flux=(sizes.flux.params + sizes.flux_vae_params) * b,
            flux_activations=int(max(consts.mmdit_activation_factor * (image_tokens + text_tokens) * sizes.flux.hidden,
                                     consts.vae_activation_factor * image_h * image_w * sizes.flux_vae_decoder_width)
                                 * b),
        )
    return _Bytes(
        mmdit=weights, mmdit_block=block, mmdit_outside=mmdit.outside_blocks * b, mmdit_leaf=mmdit.largest_leaf * b,
        t5=_encoder_bytes(sizes.t5, b, request.text_encoder_quant), clip=sizes.clip.params * b,
        encoder_leaf=max(sizes.t5.largest_leaf, sizes.clip.largest_leaf) * b, vae=sizes.vae_params * b,
        mmdit_activations=int(consts.mmdit_activation_factor * 3 * tokens * mmdit.hidden * b / request.sequence_parallel),
        encoder_activations=8 * 3 * text_tokens * sizes.t5.width * b,
        vae_decode=int(consts.vae_activation_factor * frames * tile_h * tile_w * sizes.vae_decoder_width * b + 2.5 * video),
        videos=video * request.num_samples, **flux,
    )


def _device_bytes(placement: str, full: int, block: int, outside: int, leaf: int, prefetch: bool) -> int:
    """What one component keeps on the device while it runs."""
    if placement in ("resident", "swap"):
        return full
    if placement == "leaf":
        return (2 if prefetch else 1) * leaf
    return outside + (2 if prefetch else 1) * block  # group / disk: one block, the next one prefetched


def _gpu_phases(z: _Bytes, profile: MemoryProfile) -> dict[str, int]:
    """Accelerator bytes during each phase."""
    encoders = z.t5 + z.clip
    mmdit_running = _device_bytes(profile.mmdit, z.mmdit, z.mmdit_block, z.mmdit_outside, z.mmdit_leaf, True)
    encoders_running = encoders if profile.encoders != "leaf" else 2 * z.encoder_leaf
    idle = {  # what stays on the device outside a component's own phase
        "encoders": encoders if profile.encoders == "resident" else 0,
        "mmdit": z.mmdit if profile.mmdit == "resident" else 0,
        "vae": z.vae if profile.vae == "resident" else 0,
    }
    phases = {
        "encode": encoders_running + idle["mmdit"] + idle["vae"] + z.encoder_activations,
        "sample": mmdit_running + idle["encoders"] + idle["vae"] + z.mmdit_activations,
        "decode": z.vae + idle["encoders"] + idle["mmdit"] + z.vae_decode,
    }
    if z.flux:  # FLUX draws the first frame, then stays (and the VAE encodes that frame)
        phases["image"] = z.vae + idle["encoders"] + idle["mmdit"] + z.flux_activations
    return {name: need + z.flux for name, need in phases.items()}


def _host_phases_gpu_run(z: _Bytes, profile: MemoryProfile) -> dict[str, int]:
    """Host RAM beside a GPU: loading passes each component through RAM; offloaded ones stay there."""
    on_host = 0
    if profile.encoders != "resident":
        on_host += z.t5 + z.clip
    if profile.vae != "resident":
        on_host += z.vae
    mmdit_stays = profile.mmdit in ("swap", "group", "leaf")
    if mmdit_stays:
        on_host += z.mmdit
    passing = 0 if mmdit_stays else z.mmdit + z.flux  # read into RAM, then moved to the GPU or written to disk
    pinned = z.mmdit if profile.mmdit in ("group", "leaf") else 0  # stream prefetch pins a second copy
    return {"load": on_host + passing + pinned, "run": on_host + z.videos}


def _host_phases_cpu_run(z: _Bytes, profile: MemoryProfile, workspace: float) -> dict[str, int]:
    """Everything lives in host RAM; only the disk profile keeps the MMDiT out of it (after loading)."""
    others = z.t5 + z.clip + z.vae + z.flux
    mmdit = z.mmdit_outside + z.mmdit_block if profile.mmdit == "disk" else z.mmdit
    work = int(workspace)
    phases = {
        "load": others + z.mmdit,
        "encode": others + mmdit + z.encoder_activations + work,
        "sample": others + mmdit + z.mmdit_activations + work,
        "decode": others + mmdit + z.vae_decode + z.videos + work,
    }
    if z.flux:
        phases["image"] = others + mmdit + z.flux_activations + work
    return phases


def predict(request: PlanRequest, profile: MemoryProfile, sizes: ComponentSizes, consts: PlannerConstants) -> ProfilePrediction:
    z = _sizes_in_bytes(request, sizes, consts, profile)
    runtime = consts.host_runtime_gb * 1e9
    if request.device == "cpu":
        host = _host_phases_cpu_run(z, profile, consts.host_workspace_gb * 1e9)
        return ProfilePrediction(profile.name, None, (runtime + max(host.values())) / GIB, profile.relative_time, host)
    gpu = _gpu_phases(z, profile)
    host = _host_phases_gpu_run(z, profile)
    gpu_peak = consts.cuda_context_gb * 1e9 + max(gpu.values())
    return ProfilePrediction(
        profile.name, gpu_peak / GIB, (runtime + max(host.values())) / GIB, profile.relative_time, {**gpu, **host}
    )


def plan(request: PlanRequest, sizes: ComponentSizes | None = None) -> Plan:
    """A prediction for every profile in presets/profiles/memory.toml (`sizes`: reuse a count)."""
    if request.dtype not in DTYPE_BYTES:
        raise UserError(f"unknown dtype {request.dtype!r}; allowed: {', '.join(DTYPE_BYTES)}")
    sizes = sizes or component_sizes(request.preset, request.ckpt_root)
    consts = planner_constants()
    return Plan(request, [predict(request, p, sizes, consts) for p in load_memory_profiles().values()])


def what_would_fit(
    request: PlanRequest, vram_gib: float | None, ram_gib: float | None, sizes: ComponentSizes | None = None
) -> list[str]:
    """Changes to the settings that make some profile fit, each as one line for the user (`sizes`: reuse a count)."""
    sizes = sizes or component_sizes(request.preset, request.ckpt_root)

    def first_fit(changed: PlanRequest) -> ProfilePrediction | None:
        return plan(changed, sizes).choose(vram_gib, ram_gib)

    found = []
    for quant in ("int8", "nf4"):
        if request.text_encoder_quant in (None, "int8") and quant != request.text_encoder_quant:
            row = first_fit(replace(request, text_encoder_quant=quant))
            if row:
                found.append(f"--text-encoder-quant {quant} with profile {row.profile}")
                break
    if not request.fp8_mmdit and request.device == "cuda":
        row = first_fit(replace(request, fp8_mmdit=True))
        if row:
            found.append(f"--fp8-mmdit with profile {row.profile}")
    for frames in range(request.num_frames - 4, 0, -4):
        row = first_fit(replace(request, num_frames=frames))
        if row:
            found.append(f"--num-frames {frames} with profile {row.profile}")
            break
    ratio = request.height / request.width
    for resolution, table in request.preset.buckets.items():
        # The bucket of this resolution closest in shape; suggested only when it has fewer pixels.
        h, w = min(table.values(), key=lambda hw: abs(hw[0] / hw[1] - ratio))
        if h * w < request.height * request.width:
            row = first_fit(replace(request, height=h, width=w))
            if row:
                found.append(f"--resolution {resolution} ({h}x{w}) with profile {row.profile}")
    return found
