"""`python -m training demo-recipe`: every step of the demo model's recipe, with the committed configs.

The smoke scale runs the whole chain at tiny sizes and every step's files must load as what they
are; the full scale (a GPU session) is checked without running: each command parses, each config
it names loads.
"""

import json
from pathlib import Path

import pytest
import torch

from opensora.presets import PRESET_DIR, load_preset
from training.cli import build_parser, main
from training.config import apply_overrides, load_train_config, validate
from training.demo.recipe import Recipe

REPO = Path(__file__).resolve().parents[1]


def test_full_plan_parses_and_names_only_committed_configs(tmp_path, capsys):
    assert main(["demo-recipe", "--out", str(tmp_path / "r"), "--device", "cuda", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert not (tmp_path / "r").exists()  # a dry run writes nothing
    recipe = Recipe(tmp_path / "r", "full", "cuda")
    assert plan.count("\n[") + 1 == len(recipe.steps) > 60
    parser = build_parser()
    commands = [step.argv for step in recipe.steps if step.argv]
    for argv in commands:
        args = parser.parse_args(list(argv))  # every flag of every step exists
        if argv[0] == "finetune":
            config = load_train_config(args.config)  # a name of presets/train-NAME.toml
            overrides = {k: v for k, v in vars(args).items() if "." in k or k in ("preset", "data", "output_dir", "steps", "seed", "buckets", "init")}
            validate(apply_overrides(config, overrides))
            if args.buckets:
                assert (PRESET_DIR / f"buckets-{args.buckets}.toml").is_file()
    names = [argv[0] for argv in commands]
    assert names.count("finetune") == 14 and names.count("train-vae") == 10 and names.count("generate-latents") == 5
    assert names[-4:] == ["average-weights", "demo-shard-weights", "eval-demo", "eval-demo"]
    assert "--config demo-gpu" in plan and "--dtype bf16" in plan and "--device cuda --workers 8" in plan


@pytest.mark.parametrize("name", ["demo-gpu", "demo-run10"])
def test_the_recipe_training_configs_are_the_logged_settings(name):
    config = load_train_config(name)
    assert (config.preset, config.mode, config.init, config.loss.logit_normal_mean, config.loss.logit_normal_std) == (
        "demo", "full", "preset", -0.7, 1.2)
    assert config.ema.decay == 0.998 and config.loader.cache_latents
    if name == "demo-gpu":  # runs/train-run24.toml, as sessions 15-17 ran it
        assert (config.optim.lr, config.optim.warmup_steps, config.loss.posterior_sample) == (3e-4, 50, False)
        assert (config.runtime.device, config.runtime.mixed_precision, config.buckets) == ("cuda", "no", "demo-batch64")
    from training.buckets import load_bucket_config

    for batch in (32, 64):
        table = load_bucket_config(PRESET_DIR / f"buckets-demo-batch{batch}.toml").resolutions[0]
        assert {f.num_frames: f.batch_size for f in table.frames}[33] == batch


@pytest.mark.slow
def test_smoke_scale_runs_every_step_and_each_output_loads(tmp_path, capsys):
    out = tmp_path / "recipe"
    assert main(["demo-recipe", "--out", str(out), "--scale", "smoke"]) == 0
    recipe = Recipe(out, "smoke", "cpu")
    for step in recipe.steps:
        for output in step.outputs:
            assert (out / output).exists(), (step.name, output)

    from opensora.loading import load_components, load_mmdit_weights, load_vae_weights
    from opensora.models.text_encoders import TextConditioner
    from training.dataset_csv import load_dataset_csv
    from training.demo.latent_pairs import load_pairs

    presets = {p.stem: load_preset(str(p)) for p in (out / "presets").glob("*.toml")}
    final = presets["demo"]
    for csv in (out / "data").rglob("*.csv"):
        dataset = load_dataset_csv(csv)
        assert dataset.records and not dataset.skipped, csv
    TextConditioner.from_pretrained(out / "models/demo/t5", out / "models/demo/clip", final.text)
    for vae in (out / "runs").glob("vae-*/vae.safetensors"):
        load_vae_weights(vae, final, torch.float32, "cpu")
    four = presets["mmdit-4-blocks"]
    load_mmdit_weights(out / "runs/mmdit-1-4/model.safetensors", four, torch.float32, "cpu")
    for mmdit in [*(out / "runs").glob("mmdit-[!1]*/model.safetensors"), out / "runs/mmdit-grown.safetensors",
                  out / "runs/mmdit-29-32-mean.safetensors"]:
        load_mmdit_weights(mmdit, final, torch.float32, "cpu")
    assert all(len(load_pairs(p)) == 1 for p in (out / "runs").glob("pairs-*.safetensors"))
    transformer, vae, text = load_components(final)  # the shards, through the index
    assert next(transformer.parameters()).dtype == torch.float32
    for name in ("held-out", "held-out-fresh-seeds"):
        result = json.loads((out / "eval" / f"{name}.json").read_text())
        assert result["held_out"] and result["videos"] == 8 and 0.0 <= result["shape"] <= 1.0

    capsys.readouterr()
    assert main(["demo-recipe", "--out", str(out), "--scale", "smoke"]) == 0  # a finished recipe has nothing left
    assert capsys.readouterr().out.count("done before, skipped") == len(recipe.steps)
