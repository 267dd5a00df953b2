"""`python -m training repatch-mmdit --weights IN --preset NAME --out OUT`: new token projections.

By default the projections start fresh. With `--inherit-from SOURCE_PRESET` (the preset whose VAE
and patch size the weights were trained with) they start from the trained ones, composed with a
least-squares map between the two presets' image tokens, fitted on rendered shapes-world clips.
"""

from __future__ import annotations

import argparse

import torch

from opensora.checkpoints import checkpoint_root
from opensora.errors import UserError
from opensora.io.outputs import save_safetensors_atomic
from opensora.loading import load_vae_weights
from opensora.presets import load_preset
from opensora.sampling.packing import pack
from training.commands.mmdit_weights_file import read_mmdit_weights
from training.mmdit_repatch import TOKEN_PROJECTIONS, fit_token_map, inherit_projections, repatch_projections
from training.vae_trainer import eval_clips

FIT_CLIPS_SEED = 4242


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, help="trained MMDiT (official layout, e.g. a run's model.safetensors)")
    parser.add_argument("--preset", required=True, help="preset (name or TOML) whose [mmdit] has the new token size")
    parser.add_argument("--out", required=True, help="where the new weights go (safetensors)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the new projections (default 0)")
    parser.add_argument("--inherit-from", default=None, metavar="SOURCE_PRESET",
                        help="the preset the weights were trained with: start the projections from the trained "
                             "ones through a linear map between the two VAEs' tokens (default: fresh projections)")
    parser.add_argument("--fit-clips", type=int, default=16,
                        help="rendered clips whose tokens fit that map (default 16)")


@torch.no_grad()
def paired_tokens(source_preset, target_preset, num_clips: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image tokens of the same rendered clips through both presets' VAEs (scaled posterior means)."""
    clips = eval_clips(num_clips, FIT_CLIPS_SEED, held_out=False)
    tokens = []
    for preset in (source_preset, target_preset):
        vae = load_vae_weights(checkpoint_root(preset, None) / preset.files.vae, preset, torch.float32, "cpu")
        vae.set_tiling(False)
        latents = torch.cat([vae.encode(clip[None], sample=False) for clip in clips])
        tokens.append(pack(latents, preset.mmdit.patch_size).flatten(0, 1))
    return tokens[0], tokens[1]


def run(args: argparse.Namespace) -> int:
    state = read_mmdit_weights(args.weights)
    target_preset = load_preset(args.preset)
    target = target_preset.mmdit
    if args.inherit_from is None:
        new = repatch_projections(state, target, args.seed)
        how = "fresh"
    else:
        if args.fit_clips < 1:
            raise UserError(f"fit-clips is {args.fit_clips}; must be >= 1")
        source_preset = load_preset(args.inherit_from)
        if state["img_in.weight"].shape[1] != source_preset.mmdit.in_channels:
            raise UserError(f"{args.weights} reads {state['img_in.weight'].shape[1]}-number tokens, but preset "
                            f"{args.inherit_from} has in_channels {source_preset.mmdit.in_channels}")
        old_tokens, new_tokens = paired_tokens(source_preset, target_preset, args.fit_clips)
        token_map = fit_token_map(old_tokens, new_tokens)
        new = inherit_projections(state, source_preset.mmdit, target, token_map)
        how = f"inherited through a token map fitted on {len(old_tokens)} tokens"
    renewed = sorted(key for key in new if key.startswith(TOKEN_PROJECTIONS) and new[key].shape != state[key].shape)
    save_safetensors_atomic(new, args.out)
    print(f"{args.weights}: token size {state['img_in.weight'].shape[1]} -> {target.in_channels}, "
          f"{how}: {', '.join(renewed)}; wrote {args.out}")
    return 0
