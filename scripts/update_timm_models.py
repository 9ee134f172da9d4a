#!/usr/bin/env python3
"""Regenerate lvvit_opt/models/timm_models.txt from the installed timm's `timm.list_models()`.

`lvvit-opt export --model NAME` checks NAME against this committed list so that a typo
fails in well under a second, before torch is imported. Run this after upgrading timm;
tests/test_zoo.py fails while the list and the installed timm disagree.

    .venv/bin/python scripts/update_timm_models.py
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def main() -> int:
    from lvvit_opt.core.fileio import write_text_atomic
    from lvvit_opt.models.zoo import TIMM_MODELS_FILE, format_timm_models, installed_timm_models

    version, names = installed_timm_models()
    write_text_atomic(TIMM_MODELS_FILE, format_timm_models(version, names))
    print(f"wrote {TIMM_MODELS_FILE.relative_to(REPO_ROOT)}: {len(names)} model names of timm {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
