"""Models: UltraLBM-UNet (all ablation knobs), its Mamba layer, and the registry."""

from study.models.registry import build_model, make_config, registered_models

# Importing the model modules registers them (the registry imports no model, as timm's).
from study.models import ultralbm  # noqa: E402,F401  isort: skip
from study.models import baselines  # noqa: E402,F401  isort: skip

__all__ = ["build_model", "make_config", "registered_models"]
