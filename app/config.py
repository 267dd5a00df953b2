"""What the app was started with (launch.py flags), shared by every tab."""

from dataclasses import dataclass
from pathlib import Path

from opensora.presets import DEFAULT_CKPT_DIR, DEFAULT_OUTPUT_DIR


@dataclass
class AppConfig:
    output_dir: Path = Path(DEFAULT_OUTPUT_DIR)  # videos + sidecars; the gallery reads it back
    ckpt_dir: Path = Path(DEFAULT_CKPT_DIR)  # official checkpoints
    runs_dir: Path = Path("runs")  # fine-tune runs; RUNS_DIR/*/lora.safetensors feed the LoRA picker
    preset: str | None = None  # None: official 256px if present, else demo, else tiny-random
    history_limit: int = 24  # newest outputs shown in the gallery (each is copied to Gradio's cache)

    def __post_init__(self):
        self.output_dir = Path(self.output_dir).resolve()
        self.ckpt_dir = Path(self.ckpt_dir)
        self.runs_dir = Path(self.runs_dir).resolve()
