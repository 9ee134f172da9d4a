"""Stand-in for ais_bench (tests only): the InferSession API over fake .om files."""
