"""The refinement flags `generate` and `refine` share, and the settings they make."""

from __future__ import annotations

import argparse

from opensora.refine.settings import RefineSettings


def add_endpoint_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refine-base-url",
        default=None,
        help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1 "
        "(default: $OPENAI_BASE_URL; the key is read from $OPENAI_API_KEY only)",
    )
    parser.add_argument(
        "--refine-model", default=None, help="model name on that server (default gpt-4o)"
    )
    parser.add_argument(
        "--refine-timeout", type=float, default=None, help="seconds per request (default 30)"
    )


def add_refine_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags `generate` shares: --refine-prompt plus the endpoint flags and --refine-language."""
    add_refine_prompt_argument(parser)
    add_refine_server_arguments(parser)


def add_refine_prompt_argument(parser: argparse.ArgumentParser) -> None:
    """Whether a job's prompt is refined (`queue add`: part of the job)."""
    parser.add_argument(
        "--refine-prompt",
        action="store_true",
        help="refine prompts with the configured server, or offline when none is configured",
    )


def add_refine_server_arguments(parser: argparse.ArgumentParser) -> None:
    """How prompts are refined: the endpoint flags and --refine-language (`queue run`: the runner's)."""
    add_endpoint_arguments(parser)
    parser.add_argument(
        "--refine-language",
        choices=("keep", "english"),
        default=None,
        help="language of the refined prompt (default english, what the model was trained on)",
    )


def settings_from_args(args: argparse.Namespace) -> RefineSettings:
    """RefineSettings from the flags above (missing attributes fall back to the environment)."""
    language = getattr(args, "refine_language", None) or getattr(args, "language", None)
    return RefineSettings.from_env(
        base_url=getattr(args, "refine_base_url", None),
        model=getattr(args, "refine_model", None),
        timeout_s=getattr(args, "refine_timeout", None),
        language=language,
    )
