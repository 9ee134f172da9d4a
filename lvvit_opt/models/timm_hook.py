"""Register the LV-ViT family in timm's registry without importing torch eagerly.

`import lvvit_opt` must stay light (the `apply` and `whitelist` verbs never touch
torch), yet `timm.create_model("lvvit_s")` must work once lvvit_opt is imported. If timm
is already imported we register at once; otherwise a one-shot import hook registers the
models right after timm finishes importing.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys


def _register() -> None:
    import lvvit_opt.models.model  # noqa: F401  (registration happens at import)


class _AfterTimmImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_then_register(module):
            original_exec(module)
            _register()

        spec.loader.exec_module = exec_then_register
        return spec


def install() -> None:
    if "timm" in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterTimmImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimmImport())
