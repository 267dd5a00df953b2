"""`python -m opensora check --ckpt-dir DIR`: which official files are present or missing."""

import argparse

DEFAULT_CKPT_DIR = "ckpts"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt-dir", "--ckpt_dir", dest="ckpt_dir", default=str(DEFAULT_CKPT_DIR),
                        help="folder with the official checkpoints (default ./ckpts)")
    parser.add_argument("--preset", default=None, help="check one preset (default: every preset with files)")


def run(args: argparse.Namespace) -> int:
    from opensora.checkpoints import file_status
    from opensora.presets import available_presets, load_preset

    names = [args.preset] if args.preset else available_presets()
    all_present = True
    for name in names:
        preset = load_preset(name)
        statuses = file_status(preset, args.ckpt_dir)
        if not statuses:
            print(f"{preset.name}: random weights, nothing to download")
            continue
        missing = [s for s in statuses if not s.present]
        print(f"{preset.name}: {'ready' if not missing else f'{len(missing)} missing'}")
        for status in statuses:
            print(f"  [{'present' if status.present else 'MISSING'}] {status.role:<6} {status.path}")
        if missing and preset.download:
            print(f"  download: {preset.download}")
        all_present &= not missing
    return 0 if all_present else 1
