"""One module per `python -m training` subcommand: `add_arguments(parser)` and `run(args) -> int`."""
