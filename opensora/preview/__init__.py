"""Live preview while sampling: every few steps, the predicted clean video shown small and cheap.

`projection` (torch-free) reads the per-VAE latent -> RGB map from `presets/preview/NAME.toml`;
`fit` solves that map from VAE latents and pixels (`python -m opensora fit-preview`); `live`
turns the sampler's step latents into preview frames for the runner's progress object.
"""
