"""Does one job fit this machine? The memory planner's answer, asked before anything loads.

    request = plan_request(preset, 129, 192, 336, device="cuda", dtype="bf16")
    profiles = fitting_profiles(request, "auto", *machine_limits("cuda"))   # fastest first, or UserError

The CLI's generate, the app's Generate buttons (both through `opensora.runner.check_job_fits`) and
the app's prediction line ask here; `python -m opensora plan` prints the same plan as a table.
The planner covers Open-Sora 2.0 presets (`planner_covers`).
"""

from dataclasses import dataclass
from pathlib import Path

from opensora.errors import UserError
from opensora.memory.hardware import available_ram_gib, gpu_memory_gib
from opensora.memory.planner import Plan, PlanRequest, ProfilePrediction, plan, what_would_fit
from opensora.presets import FAMILY_V2, Preset

AUTO = "auto"
_SIZES: dict[tuple[str, str, str], object] = {}  # (preset file, name, checkpoint root) -> ComponentSizes


def planner_covers(preset: Preset) -> bool:
    """The planner's sizes and constants are the MMDiT's (with either autoencoder, and FLUX)."""
    return preset.family == FAMILY_V2


def cached_sizes(preset: Preset, ckpt_root: Path | None):
    """Component sizes, counted once per preset (the 11B model takes about a second on the meta device)."""
    from opensora.memory.sizes import component_sizes

    key = (str(preset.path), preset.name, str(ckpt_root))
    if key not in _SIZES:
        _SIZES[key] = component_sizes(preset, ckpt_root)
    return _SIZES[key]


def plan_request(
    preset: Preset, num_frames: int, height: int, width: int, num_samples: int = 1, *, device: str = "cuda",
    dtype: str = "bf16", text_encoder_quant: str | None = None, fp8_mmdit: bool = False,
    ckpt_root: Path | None = None, ranks: int = 1, t2i2v_image: tuple[int, int] | None = None,
) -> PlanRequest:
    """`device` as the user gives it ("cuda:1" plans for a GPU run, "cpu" for host RAM only);
    `t2i2v_image`: (height, width) of the FLUX first frame of a text -> image -> video job."""
    return PlanRequest(
        preset=preset, num_frames=num_frames, height=height, width=width, num_samples=num_samples,
        device="cuda" if str(device).startswith("cuda") else "cpu", dtype=dtype,
        text_encoder_quant=text_encoder_quant, fp8_mmdit=fp8_mmdit, ckpt_root=ckpt_root, sequence_parallel=ranks,
        t2i2v_image=t2i2v_image,
    )


def machine_limits(device: str) -> tuple[float | None, float | None]:
    """(GPU GiB of `device` or None on a CPU, host RAM GiB available now)."""
    return gpu_memory_gib(device), available_ram_gib()


def plan_job(request: PlanRequest) -> Plan:
    return plan(request, cached_sizes(request.preset, request.ckpt_root))


def _limits_text(request: PlanRequest, vram: float | None, ram: float | None) -> str:
    parts = [f"{vram:.1f} GiB GPU" if request.device == "cuda" and vram is not None else "",
             f"{ram:.1f} GiB RAM" if ram is not None else ""]
    return " / ".join(part for part in parts if part) or "no limit given"


def _least_needed(result: Plan) -> str:
    gpu = min((row for row in result.rows if row.gpu_gib is not None), key=lambda row: row.gpu_gib, default=None)
    ram = min(result.rows, key=lambda row: row.ram_gib)
    least = f"at least {ram.ram_gib:.1f} GiB RAM ({ram.profile})"
    if gpu is not None:
        least = f"at least {gpu.gpu_gib:.1f} GiB GPU ({gpu.profile}) and " + least
    return f"nothing smaller helps at these limits; these settings need {least}"


def refusal(request: PlanRequest, result: Plan, vram: float | None, ram: float | None) -> str:
    """The message when no profile fits: the limits, and what would fit (fewer frames, another
    resolution, quantised encoders, fp8), else how much these settings need."""
    vram = vram if request.device == "cuda" else None
    offers = what_would_fit(request, vram, ram, cached_sizes(request.preset, request.ckpt_root))
    hint = "; ".join(offers) if offers else _least_needed(result)
    limits = _limits_text(request, vram, ram)
    if request.device == "cpu":
        pixels = request.num_frames * request.height * request.width
        return (f"{request.num_frames} frames of {request.width}x{request.height} ({pixels / 1e6:.0f} M pixels) is too "
                f"large for a CPU run: no memory profile fits {limits}; what would fit: {hint}")
    return (f"no memory profile fits {limits} for {request.num_frames} frames at {request.height}x{request.width}; "
            f"what would fit: {hint}")


@dataclass(frozen=True)
class Fit:
    plan: Plan
    profiles: list[str]  # the profiles that may run the job, fastest first
    vram_gib: float | None
    ram_gib: float | None

    @property
    def chosen(self) -> ProfilePrediction:
        return next(row for row in self.plan.rows if row.profile == self.profiles[0])


def fit_job(request: PlanRequest, requested: str, vram: float | None, ram: float | None) -> Fit:
    """The profiles that run `request` within the limits: all that fit for `auto`, else the requested
    one. UserError (naming what would fit) when none does, or when the requested one does not."""
    vram = vram if request.device == "cuda" else None
    result = plan_job(request)
    fitting = [row.profile for row in result.fitting(vram, ram)]
    if not fitting:
        raise UserError(refusal(request, result, vram, ram))
    if requested == AUTO:
        return Fit(result, fitting, vram, ram)
    if requested not in fitting:
        row = next(r for r in result.rows if r.profile == requested)
        need = f"{row.ram_gib:.1f} GiB RAM" if row.gpu_gib is None else f"{row.gpu_gib:.1f} GiB GPU / {row.ram_gib:.1f} GiB RAM"
        raise UserError(
            f"memory profile {requested} needs about {need} for {request.num_frames} frames at "
            f"{request.height}x{request.width}, more than {_limits_text(request, vram, ram)}; profiles that fit: "
            f"{', '.join(fitting)} (or auto)"
        )
    return Fit(result, [requested], vram, ram)
