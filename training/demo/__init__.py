"""The demo-model lab: the tools that made the bundled shapes-world model (models/demo/).

The renderer and its dataset writer, the VAE and text-encoder trainers, the MMDiT's growth and
weight averaging, decoder training on the MMDiT's own latents, the held-out evaluation, the
shard writer and the recipe that runs them in order (`python -m training demo-recipe`). The
MMDiT itself is trained by the generic trainer (`training/trainer.py`). How the shipped weights
were made, run by run: training/demo/HISTORY.md.
"""
