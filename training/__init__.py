"""Training side of Open-Sora Studio: data preparation, datasets and buckets, trainer, CLI."""
