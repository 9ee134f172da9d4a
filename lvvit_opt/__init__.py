"""lvvit-opt: take an LV-ViT (and the ViT family) from a PyTorch checkpoint to a fast,
verified Ascend NPU model, proving every step.

Importing this package is cheap: torch and timm are loaded only by the verbs that need
them. The LV-ViT models are still registered in timm's registry as soon as both this
package and timm are imported, in either order (see `models.timm_hook`). The layout of the
subpackages and what each may import: ARCHITECTURE.md.
"""
__version__ = "0.1.0"

from lvvit_opt.models import timm_hook  # noqa: E402

timm_hook.install()
