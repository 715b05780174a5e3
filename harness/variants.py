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
    parameters: str      # "full": every parameter; "lora": LoRA adapters only (peft);
                         # "lora+lm-head": LoRA adapters and the LM head (the reference's MeZO (LoRA) with
                         # loralib 0.1.1); "lm-head": the LM head only (the same with loralib >= 0.1.2)
    optimizer: str       # "mezo": zeroth-order SPSA; "adamw": first-order backprop
    description: str
    requires: tuple[str, ...] = ()   # optional packages it imports
    label: str = ""                  # the method's name in tables and figures (the paper's, where it has one)

    def missing_packages(self) -> list[str]:
        return [name for name in self.requires if importlib.util.find_spec(name) is None]


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant("hf-mlm", "hf", "mlm", "ce", "full", "mezo",
                "full-parameter MeZO, prompt + label words (the paper's MeZO)",
                label="MeZO"),
        Variant("hf-mlm-lora", "hf", "mlm", "ce", "lora", "mezo",
                "MeZO on LoRA adapters (query, value) via peft", requires=("peft",),
                label="MeZO (LoRA), adapters only (as described)"),
        Variant("hf-mlm-lora-ref", "hf", "mlm", "ce", "lora+lm-head", "mezo",
                "MeZO (LoRA) as the reference ran it with loralib 0.1.1 (PyPI's release when the paper was "
                "made): live adapters plus the LM head its freezing rule leaves trainable, no weight decay",
                requires=("peft",),
                label="MeZO (LoRA) as the reference ran it, loralib 0.1.1: adapters + LM head"),
        Variant("hf-mlm-lora-ref-merged", "hf", "mlm", "ce", "lm-head", "mezo",
                "MeZO (LoRA) as the reference runs with loralib >= 0.1.2: adapters merged in eval mode never "
                "reach the loss, so MeZO trains only the LM head (dense, LayerNorm, untied decoder, bias)",
                label="MeZO (LoRA) as the reference runs with loralib >= 0.1.2: LM head only"),
        Variant("hf-cls", "hf", "cls", "ce", "full", "mezo",
                "MeZO with a randomly initialised classification head, no prompt",
                label="MeZO, no prompt (classification head)"),
        Variant("hf-mlm-acc", "hf", "mlm", "neg-accuracy", "full", "mezo",
                "MeZO on -(batch accuracy) of the prompt objective",
                label="MeZO on accuracy"),
        Variant("hf-cls-acc", "hf", "cls", "neg-accuracy", "full", "mezo",
                "MeZO on -(batch accuracy) with a classification head",
                label="MeZO on accuracy, no prompt"),
        Variant("hf-ft", "hf", "mlm", "ce", "full", "adamw",
                "first-order fine-tuning (AdamW, backprop) of the prompt objective: the FT baseline",
                label="FT (Adam)"),
        Variant("sglang-mlm", "sglang", "mlm", "ce", "full", "mezo",
                "hf-mlm served by SGLang's ModelRunner (ragged batches, RadixAttention measured)",
                requires=("sglang",),
                label="MeZO on SGLang"),
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
