"""`lvvit-opt` command line. Each area registers its verbs in its own module."""
from lvvit_opt.cli._base import main

# Registration order is the order `lvvit-opt --help` lists them in.
from lvvit_opt.cli import (export_cmd, passes_cmd, validate_cmd, whitelist_cmd, ascend_cmd, data_cmd, bench_cmd,  # noqa: E402,F401
                           run_cmd, debug_cmd)
from lvvit_opt.cli import doctor_cmd, inspect_cmd, tune_cmd, quantize_cmd  # noqa: E402,F401

__all__ = ["main"]
