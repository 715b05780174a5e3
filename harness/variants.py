"""The variant registry: a variant names a backend, a head, a loss, a trainable parameter
set and an optimizer. Its protocol values (grid, defaults) live in the protocol file's
[variants.<name>] tables. Adding a variant is one entry here."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class Variant:
    name: str
    backend: str         # "hf": Hugging Face transformers; "sglang": SGLang's in-process ModelRunner
    head: str            # "mlm": label-word logits at <mask> (prompt); "cls": classification head, no prompt
    loss: str            # "ce": cross-entropy; "neg-accuracy": -(batch accuracy), non-differentiable
    parameters: str      # "full": every parameter; "lora": LoRA adapters only (peft)
    optimizer: str       # "mezo": zeroth-order SPSA; "adamw": first-order backprop
    description: str
    requires: tuple[str, ...] = ()   # optional packages it imports

    def missing_packages(self) -> list[str]:
        return [name for name in self.requires if importlib.util.find_spec(name) is None]


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("hf-mlm", "hf", "mlm", "ce", "full", "mezo",
                "full-parameter MeZO, prompt + label words (the paper's MeZO)"),
        Variant("hf-mlm-lora", "hf", "mlm", "ce", "lora", "mezo",
                "MeZO on LoRA adapters (query, value) via peft", requires=("peft",)),
        Variant("hf-cls", "hf", "cls", "ce", "full", "mezo",
                "MeZO with a randomly initialised classification head, no prompt"),
        Variant("hf-mlm-acc", "hf", "mlm", "neg-accuracy", "full", "mezo",
                "MeZO on -(batch accuracy) of the prompt objective"),
        Variant("hf-cls-acc", "hf", "cls", "neg-accuracy", "full", "mezo",
                "MeZO on -(batch accuracy) with a classification head"),
        Variant("hf-ft", "hf", "mlm", "ce", "full", "adamw",
                "first-order fine-tuning (AdamW, backprop) of the prompt objective: the FT baseline"),
        Variant("sglang-mlm", "sglang", "mlm", "ce", "full", "mezo",
                "hf-mlm served by SGLang's ModelRunner (ragged batches, RadixAttention measured)",
                requires=("sglang",)),
    ]
}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise HarnessError(f"unknown variant {name!r}; known variants: {', '.join(sorted(VARIANTS))}")
    return VARIANTS[name]


def require_installed(variant: Variant) -> None:
    missing = variant.missing_packages()
    if missing:
        raise HarnessError(f"variant {variant.name!r} needs {', '.join(missing)}: "
                           f"pip install 'mezo-bench[{','.join(missing)}]'")
