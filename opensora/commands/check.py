"""`python -m opensora check --ckpt-dir DIR`: which checkpoint files are ready, missing or broken,
and which preset the app and `generate` use by default.

Exit status: with --preset, 0 when that preset's files are ready, else 1. Without it, 0 when a
model with trained weights is ready (the official one, or the bundled demo model the app then
uses), else 1.
"""

import argparse

from opensora.presets import DEFAULT_CKPT_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt-dir", "--ckpt_dir", dest="ckpt_dir", default=DEFAULT_CKPT_DIR,
                        help="folder with the official checkpoints (default ./ckpts)")
    parser.add_argument("--preset", default=None, help="check one preset (default: every preset with files)")


def run(args: argparse.Namespace) -> int:
    from opensora.checkpoints import default_preset_name, file_status
    from opensora.presets import available_presets, load_preset

    names = [args.preset] if args.preset else available_presets()
    ready = {}
    for name in names:
        preset = load_preset(name)
        statuses = file_status(preset, args.ckpt_dir)
        if not statuses:
            print(f"{preset.name}: random weights, nothing to download")
            continue
        missing = [s for s in statuses if not s.present]
        broken = [s for s in statuses if s.present and s.problem]
        ready[name] = not (missing or broken)
        problems = [f"{len(missing)} missing"] * bool(missing) + [f"{len(broken)} broken"] * bool(broken)
        print(f"{preset.name}: {'ready' if ready[name] else ', '.join(problems)}")
        for status in statuses:
            tag = "present" if status.ready else "BROKEN" if status.present else "MISSING"
            print(f"  [{tag}] {status.role:<7} {status.path}" + (f": {status.problem}" if status.problem else ""))
        if not ready[name] and preset.download:
            print(f"  download: {preset.download}")
    if args.preset:
        return 0 if ready.get(args.preset, True) else 1

    default = default_preset_name(args.ckpt_dir)
    weights = load_preset(default).weights
    if weights == "official":
        print(f"using {default}: the official checkpoint is ready")
    elif weights == "bundled":
        print(f"using {default}: the official files are missing or broken (above), so the app and `generate` "
              f"run the bundled {default} model; that is fine for trying things out")
    else:
        print(f"using {default}: neither the official files nor the bundled demo model are usable (above); "
              "videos will be noise")
    return 0 if weights in ("official", "bundled") else 1
