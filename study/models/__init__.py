"""Models: UltraLBM-UNet (all ablation knobs), its Mamba layer, and the registry."""

from study.models.registry import build_model, make_config, registered_models

__all__ = ["build_model", "make_config", "registered_models"]
