"""The variant registry: a variant names a backend, a head, a loss, a trainable parameter
set and an optimizer. Its protocol values (grid, defaults) live in the protocol file's
[variants.<name>] tables. Adding a variant is one entry here."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Literal, get_args

from harness.backends.registry import BACKENDS, backend_entry
from harness.core.errors import HarnessError

Head = Literal["mlm", "cls"]
Loss = Literal["ce", "neg-accuracy"]
ParameterSet = Literal["full", "lora", "lora+lm-head", "lm-head"]
Optimizer = Literal["mezo", "adamw"]


@dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    backend: str         # a harness.backends.registry name: "hf" (transformers) or "sglang" (SGLang's ModelRunner)
    head: Head           # "mlm": label-word logits at <mask> (prompt); "cls": classification head, no prompt
    loss: Loss           # "ce": cross-entropy; "neg-accuracy": -(batch accuracy), non-differentiable
    parameters: ParameterSet   # "full": every parameter; "lora": LoRA adapters only (peft);
                         # "lora+lm-head": LoRA adapters and the LM head (the reference's MeZO (LoRA) with
                         # loralib 0.1.1); "lm-head": the LM head only (the same with loralib >= 0.1.2)
    optimizer: Optimizer  # "mezo": zeroth-order SPSA; "adamw": first-order backprop
    description: str     # one line, shown by `mezo-bench protocol`
    label: str           # the method's name in tables and figures (the paper's, where it has one)
    requires: tuple[str, ...] = ()   # optional packages it imports beyond its backend's

    def __post_init__(self) -> None:
        where = f"variant {self.name!r}"
        for field, kind in (("head", Head), ("loss", Loss), ("parameters", ParameterSet), ("optimizer", Optimizer)):
            if getattr(self, field) not in get_args(kind):
                raise ValueError(f"{where}: {field} must be one of {get_args(kind)}, got {getattr(self, field)!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"{where}: backend must be one of {tuple(BACKENDS)}, got {self.backend!r}")
        backend = BACKENDS[self.backend]
        if self.head not in backend.heads or self.parameters not in backend.parameter_sets:
            raise ValueError(f"{where}: the {backend.label} backend serves heads {backend.heads} with parameter "
                             f"sets {backend.parameter_sets}, not {self.head!r} with {self.parameters!r}")
        if not self.description or not self.label:
            raise ValueError(f"{where}: description and label must be non-empty")

    def missing_packages(self) -> list[str]:
        needed = backend_entry(self.backend).requires + self.requires
        return [name for name in needed if importlib.util.find_spec(name) is None]


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant(name="hf-mlm", backend="hf", head="mlm", loss="ce", parameters="full", optimizer="mezo",
                description="full-parameter MeZO, prompt + label words (the paper's MeZO)",
                label="MeZO"),
        Variant(name="hf-mlm-lora", backend="hf", head="mlm", loss="ce", parameters="lora", optimizer="mezo",
                description="MeZO on LoRA adapters (query, value) via peft", requires=("peft",),
                label="MeZO (LoRA), adapters only (as described)"),
        Variant(name="hf-mlm-lora-ref", backend="hf", head="mlm", loss="ce", parameters="lora+lm-head",
                optimizer="mezo",
                description="MeZO (LoRA) as the reference ran it with loralib 0.1.1 (PyPI's release when the paper "
                "was made): live adapters plus the LM head its freezing rule leaves trainable, no weight decay",
                requires=("peft",),
                label="MeZO (LoRA) as the reference ran it, loralib 0.1.1: adapters + LM head"),
        Variant(name="hf-mlm-lora-ref-merged", backend="hf", head="mlm", loss="ce", parameters="lm-head",
                optimizer="mezo",
                description="MeZO (LoRA) as the reference runs with loralib >= 0.1.2: adapters merged in eval mode "
                "never reach the loss, so MeZO trains only the LM head (dense, LayerNorm, untied decoder, bias)",
                label="MeZO (LoRA) as the reference runs with loralib >= 0.1.2: LM head only"),
        Variant(name="hf-cls", backend="hf", head="cls", loss="ce", parameters="full", optimizer="mezo",
                description="MeZO with a randomly initialised classification head, no prompt",
                label="MeZO, no prompt (classification head)"),
        Variant(name="hf-mlm-acc", backend="hf", head="mlm", loss="neg-accuracy", parameters="full", optimizer="mezo",
                description="MeZO on -(batch accuracy) of the prompt objective",
                label="MeZO on accuracy"),
        Variant(name="hf-cls-acc", backend="hf", head="cls", loss="neg-accuracy", parameters="full", optimizer="mezo",
                description="MeZO on -(batch accuracy) with a classification head",
                label="MeZO on accuracy, no prompt"),
        Variant(name="hf-ft", backend="hf", head="mlm", loss="ce", parameters="full", optimizer="adamw",
                description="first-order fine-tuning (AdamW, backprop) of the prompt objective: the FT baseline",
                label="FT (Adam)"),
        Variant(name="sglang-mlm", backend="sglang", head="mlm", loss="ce", parameters="full", optimizer="mezo",
                description="hf-mlm served by SGLang's ModelRunner (ragged batches, RadixAttention measured)",
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
