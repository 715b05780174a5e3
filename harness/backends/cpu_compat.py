"""CPU compatibility shim for environments with SGLang installed (the `tests-sglang` session).

Why: SGLang needs `torchvision`, and the only torchvision wheel that matches its pins on PyPI
is linked against CUDA torch. On a CPU-only torch build, `import torchvision` then fails with
"operator torchvision::nms does not exist" -- and transformers imports torchvision on its
own model imports, so without this nothing in the harness loads in that environment.
Declaring the schemas of the two C++ ops torchvision registers Python fake kernels for is
enough for the import to succeed; the ops are never called here.

Active only on a CPU-only torch build with torchvision installed and its ops missing; on
CUDA builds (where torchvision's C++ ops load) it does nothing. It runs when `harness` is
imported, so on such a machine import `harness` before `sglang` in your own scripts.
"""

from __future__ import annotations

import importlib.util
import sys

_TORCHVISION_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor qdets, Tensor qscores, float dets_scale, int dets_zero_point, float qdets_scale, "
    "int qdets_zero_point, float iou_threshold) -> Tensor",
)
_library = None   # kept alive: dropping the Library object would unregister the schemas


def declare_torchvision_ops_on_cpu() -> bool:
    """Make `import torchvision` work on a CPU torch build; returns whether the shim was needed."""
    global _library
    if _library is not None or importlib.util.find_spec("torchvision") is None:
        return False
    import torch

    if torch.version.cuda is not None:
        return False
    try:
        import torchvision  # noqa: F401 -- a build that matches this torch imports fine
        return False
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            raise
    for name in [name for name in sys.modules if name == "torchvision" or name.startswith("torchvision.")]:
        del sys.modules[name]   # the failed, half-initialised import
    _library = torch.library.Library("torchvision", "FRAGMENT")
    for schema in _TORCHVISION_OP_SCHEMAS:
        _library.define(schema)
    import torchvision  # noqa: F401,F811
    return True
