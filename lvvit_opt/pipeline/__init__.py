"""Pipelines that compose the stages end to end: `run` (the seed recipe, checkpoint to a
measured .om) and `family` (one ViT through export, pass and whitelist shapes). Imports any
layer below it; never tune."""
