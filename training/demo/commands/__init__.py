"""The demo lab's `python -m training` subcommands: `add_arguments(parser)` and `run(args) -> int`."""
