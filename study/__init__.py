"""ultralbm-study: rebuild the UltraLBM-UNet paper's tables from your own runs."""

__version__ = "0.1.0"
