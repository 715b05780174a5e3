"""mezo-bench: a reproducibility benchmark suite for zeroth-order (MeZO) fine-tuning."""

__version__ = "0.1.0"
