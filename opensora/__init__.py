"""Open-Sora Studio core: models, conditioning, sampling, pipeline, io and CLI."""

__version__ = "0.1.0"
