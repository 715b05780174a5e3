"""The variant registry: a variant names a backend, an objective, a trainable parameter
set and an optimizer. Adding a variant is one entry here (plus code for any new part)."""

from dataclasses import dataclass

from harness.errors import HarnessError


@dataclass(frozen=True)
class Variant:
    name: str
    backend: str      # "hf": Hugging Face transformers
    objective: str    # "mlm-prompt": cross-entropy over label-word logits at <mask>
    parameters: str   # "full": every parameter of the model
    optimizer: str    # "mezo": zeroth-order SPSA (MeZO, Algorithm 1)
    description: str


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in [
        Variant(
            name="hf-mlm",
            backend="hf",
            objective="mlm-prompt",
            parameters="full",
            optimizer="mezo",
            description="full-parameter MeZO on the prompt + label-word masked-LM objective",
        ),
    ]
}


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise HarnessError(f"unknown variant {name!r}; known variants: {', '.join(sorted(VARIANTS))}")
    return VARIANTS[name]
