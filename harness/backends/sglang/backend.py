"""harness.backends.base.Backend on SGLang: the Hugging Face model is loaded as for `hf`, then its
weights move into SGLang's in-process ModelRunner, which serves the full masked LM (ragged
batches, no backprop, its RadixAttention measured under MeZO)."""

from __future__ import annotations

import torch

from harness.backends.base import LoadedModel
from harness.backends.hf import load_model
from harness.core.errors import HarnessError


class SGLangBackend:
    name = "sglang"
    ragged_batches = True
    memory_phases = ("inference", "mezo_step")   # no backprop
    memory_in_process = True                     # one ModelRunner per process; it cannot be pickled
    measures_prefix_cache = True

    def build_model(self, variant, settings, tokenizer, num_labels: int, device: torch.device,
                    seed: int) -> LoadedModel:
        from harness.backends.families import family_of
        from harness.backends.sglang.runner import SGLangMaskedLM

        loaded = load_model(settings.model, tokenizer, init_seed=settings.init_seed, dtype=settings.dtype,
                            device=device, lm_decoder=settings.lm_decoder)
        family = family_of(loaded.model).name
        if family != "roberta":
            raise HarnessError(
                f"the SGLang backend serves RoBERTa only (SGLang's XLMRobertaBaseModel under our masked-LM head, "
                f"tested for parity with Hugging Face); model {settings.model!r} is "
                f"{family}: its parity is not established, so it is refused. "
                "Use the hf-* variants for it")
        # The runner's pools must hold the largest batch; the radix measurement keeps one pass's
        # tokens cached while the next runs, hence twice that.
        max_requests = max(settings.eval_batch_size, *(size for sizes in settings.batch_size.values() for size in sizes))
        served = SGLangMaskedLM.build(loaded.model, dtype=settings.dtype, mask_token_id=tokenizer.mask_token_id,
                                      max_total_tokens=2 * max_requests * settings.max_length,
                                      max_requests=max_requests)
        info = {**loaded.info, "backend": served.info, "head": "RobertaForMaskedLM label words (SGLang)"}
        return LoadedModel(model=served, info=info)

    def head(self, variant, model, label_token_ids: list[int]):
        from harness.backends.sglang.runner import SGLangLabelWordHead

        return SGLangLabelWordHead(model, label_token_ids)

    def trainable_parameters(self, model) -> list[tuple[str, torch.Tensor]]:
        return [(name, param) for name, param in model.named_parameters() if param.requires_grad]
