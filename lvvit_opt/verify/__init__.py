"""Proving that two models compute the same function: the one reader of `--inputs`, output
comparison under named tolerances, model-vs-model validation, golden files, random-op
detection. Every stage above uses it to prove its step; imports data, runtime, models, core."""
