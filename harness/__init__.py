"""mezo-bench: a reproducibility benchmark suite for zeroth-order (MeZO) fine-tuning."""

from harness.backends.cpu_compat import declare_torchvision_ops_on_cpu

__version__ = "0.1.0"

declare_torchvision_ops_on_cpu()   # a no-op unless SGLang's torchvision sits on a CPU torch
