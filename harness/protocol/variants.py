"""The variant registry: a variant names a backend, a head, a loss, a trainable parameter
set and an optimizer. Its protocol values (grid, defaults) live in the protocol file's
[variants.<name>] tables. Adding a variant is one table in variants.toml, beside this file.

MeZO (LoRA) three ways. The reference (MeZO `medium_models`) builds
`loralib.Linear(hidden, hidden, r, lora_alpha)` for query and value
(`src/modeling_roberta.py`), freezes only the `roberta.*` parameters without "lora" in their
name (`run.py`), so the whole LM head (dense, LayerNorm, its untied decoder, bias) and an
unused `classifier` stay trainable too, and runs every zeroth-order forward after
`model.eval()` (`src/trainer.py`, `zo_forward`). What that trains depends on the loralib
installed, which the reference does not pin (tests/backends/test_reference_lora.py shows it by
execution with both releases):
- loralib 0.1.1 (PyPI, 2021-09-17; the release on PyPI when the paper was written) merges only
  in its `Linear.eval()` override, which `model.eval()` never calls (it calls `train(False)` on
  each child): the adapters stay live and MeZO trains adapters and LM head: `hf-mlm-lora-ref`.
- loralib 0.1.2 (PyPI, 2023-08-27; GitHub main since 2022-10-16) merges B.A into W in
  `train(False)` and sets `merged`; the adapters never reach the loss again (their projected
  gradient is exactly 0), so MeZO trains the LM head alone: `hf-mlm-lora-ref-merged`.
Which produced the paper's Table 18 is not recorded, so both run in the `paper` profile. Both
use weight decay 0: the paper lists 0.1, but the zeroth-order update of the code that produced
it ignored weight decay (fixed 2023-12-27). `hf-mlm-lora` is the method as the paper
describes it (adapters only, peft, weight decay 0.1); it has no published number of its own.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from harness.backends.registry import BACKENDS, backend_entry
from harness.core.errors import HarnessError
from harness.core.files import check_keys, read_toml

Head = Literal["mlm", "cls"]
Loss = Literal["ce", "neg-accuracy"]
ParameterSet = Literal["full", "lora", "lora+lm-head", "lm-head", "prefix", "none"]
Optimizer = Literal["mezo", "mezo-adam", "adamw", "none"]
ZEROTH_ORDER: tuple[Optimizer, ...] = ("mezo", "mezo-adam")   # optimizers that estimate the gradient from two forwards


@dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    backend: str         # a harness.backends.registry name: "hf" (transformers) or "sglang" (SGLang's ModelRunner)
    head: Head           # "mlm": label-word logits at <mask> (prompt); "cls": classification head, no prompt
    loss: Loss           # "ce": cross-entropy; "neg-accuracy": -(batch accuracy), non-differentiable
    parameters: ParameterSet   # "full": every parameter; "lora": LoRA adapters only (peft);
                         # "lora+lm-head": LoRA adapters and the LM head (the reference's MeZO (LoRA) with
                         # loralib 0.1.1); "lm-head": the LM head only (the same with loralib >= 0.1.2);
                         # "prefix": prefix keys and values of every layer (harness.backends.prefix);
                         # "none": nothing is trained (zero-shot, LP)
    optimizer: Optimizer  # "mezo": zeroth-order SPSA; "mezo-adam": Adam on MeZO's gradient estimate;
                         # "adamw": first-order backprop; "none": no training steps
    description: str     # one line, shown by `mezo-bench protocol`
    label: str           # the method's name in tables and figures (the paper's, where it has one)
    requires: tuple[str, ...] = ()   # optional packages it imports beyond its backend's
    linear_probe: bool = False   # fit the label words' decoder rows by linear probing before training
                                 # (harness.recipes.linear_probe: LP, and LP-then-MeZO)

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
                             f"sets {backend.parameter_sets} ({backend.limits or 'its model class'}), "
                             f"not {self.head!r} with {self.parameters!r}")
        if (self.parameters == "none") != (self.optimizer == "none"):
            raise ValueError(f"{where}: parameters \"none\" and optimizer \"none\" go together (nothing trained), "
                             f"got parameters {self.parameters!r} with optimizer {self.optimizer!r}")
        if self.linear_probe and self.head != "mlm":
            raise ValueError(f"{where}: linear_probe fits the label words' decoder rows, so it needs head \"mlm\"")
        if not self.description or not self.label:
            raise ValueError(f"{where}: description and label must be non-empty")

    def missing_packages(self) -> list[str]:
        needed = backend_entry(self.backend).requires + self.requires
        return [name for name in needed if importlib.util.find_spec(name) is None]


def _load_registry() -> dict[str, Variant]:
    tables = read_toml(Path(__file__).with_name("variants.toml"), "variant registry")
    fields = [field.name for field in dataclasses.fields(Variant) if field.name != "name"]
    variants = {}
    for name, table in tables.items():
        check_keys(table, fields, f"variants.toml [{name}]")
        variants[name] = Variant(name=name, **{key: tuple(value) if isinstance(value, list) else value
                                               for key, value in table.items()})
    return variants


VARIANTS: dict[str, Variant] = _load_registry()


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise HarnessError(f"unknown variant {name!r}; known variants: {', '.join(sorted(VARIANTS))}")
    return VARIANTS[name]


def require_installed(variant: Variant) -> None:
    missing = variant.missing_packages()
    if missing:
        raise HarnessError(f"variant {variant.name!r} needs {', '.join(missing)}: "
                           f"pip install 'mezo-bench[{','.join(missing)}]'")
