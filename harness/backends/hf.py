"""The Hugging Face backend: masked-LM models (RoBERTa, BERT: harness.backends.families) from hub
ids, local paths or offline stand-ins, the variants' heads and trainable parameter sets (full,
LoRA via peft, LM head, prefix).

Offline stand-ins: `random-init:<tiny|roberta-base|roberta-large|bert-tiny>` builds the architecture
with random weights seeded by the protocol's `init_seed` (the same stand-in checkpoint for
every run seed); `pretrained:<name>` is a pretrained checkpoint shipped in a package
(harness.backends.standins: `pretrained:bert-tiny-splade`). Anything else is a hub id or a local
path: its config's `model_type` chooses the family, whose masked-LM class loads it (`from_pretrained`).
New weights -- a classification head, LoRA's A -- are drawn from the run seed, as the reference
seeds everything with the run seed before it builds the model. The classification head sits on
the masked LM's encoder weights. LoRA adapters are injected with peft and never merged; prefixes
as the reference's prefix tuning (harness.backends.prefix).

`lm_decoder = "untied"` gives the LM head its own decoder weight, as the reference's model has,
so MeZO perturbs and updates it with its own z; `"tied"` is Hugging Face's default (one
parameter, one z). The record's `model.lm_decoder` says which, and what an untied decoder was
initialised from (`load_model`). The reference also holds a pooler and a `classifier` that never
reach the prompt loss; MeZO perturbs and updates them there (the pooler is frozen in its LoRA
runs). They are not built here: they cannot change any loss or prediction, so leaving them out
changes only which numbers of the z stream the other parameters receive (z stays i.i.d.
N(0, 1) per parameter, so the estimator's distribution is the same).

The masked-LM head is computed without waste: only the hidden state at <mask> goes through
the LM head (dense -> GELU -> LayerNorm), and only the label words' rows of the decoder are
used. The full head would build a [batch, length, vocab] tensor: 64 x 128 x 50265 fp32 =
1.6 GB per roberta-large forward.
"""

from __future__ import annotations

import copy
import hashlib
import sys
from pathlib import Path

import torch

from harness.backends.base import LoadedModel
from harness.backends.families import MODEL_FAMILIES, ModelFamily, family_of, family_of_model_type
from harness.backends.model_specs import RANDOM_INIT_CONFIGS, RANDOM_INIT_FAMILIES, RANDOM_INIT_PREFIX
from harness.backends.standins import is_standin, resolve_standin
from harness.core.dtypes import DTYPE_NAMES
from harness.core.errors import HarnessError
from harness.tasks.batching import Batch


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a dtype name (harness.core.dtypes.DTYPE_NAMES)."""
    if name not in DTYPE_NAMES:
        raise HarnessError(f"unknown dtype {name!r}; known: {', '.join(DTYPE_NAMES)}")
    return getattr(torch, name)


def _weights_sha256(directory: Path) -> str | None:
    files = sorted(p for pattern in ("*.safetensors", "*.bin") for p in directory.glob(pattern))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def untie_lm_decoder(model, decoder_weight: torch.Tensor) -> None:
    """Give the LM head its own decoder weight, as the reference's RobertaForPromptFinetuning
    has (MeZO `medium_models/src/models.py`: "input embeddings and the output embeddings are NOT
    tied"), so MeZO perturbs and updates it with its own z. The decoder's bias stays the head's
    `bias` parameter, as in the reference's RobertaLMHead (`self.decoder.bias = self.bias`); the
    same for every family (ModelFamily.untie_decoder)."""
    family_of(model).untie_decoder(model, decoder_weight)


def _random_init_config(name: str, tokenizer) -> tuple[ModelFamily, dict]:
    if name not in RANDOM_INIT_CONFIGS:
        raise HarnessError(f"unknown random-init config {name!r}; known: {sorted(RANDOM_INIT_CONFIGS)}")
    family = MODEL_FAMILIES[RANDOM_INIT_FAMILIES.get(name, "roberta")]
    values = dict(RANDOM_INIT_CONFIGS[name])
    if values["vocab_size"] is None:
        values["vocab_size"] = len(tokenizer)
    ids = {"pad_token_id": tokenizer.pad_token_id}
    if family.name == "roberta":   # RoBERTa's <s> and </s> are its bos and eos; BERT's config has none
        ids.update(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    values.update(ids)
    return family, values


def _quiet_load(masked_lm, source: str, revision: str | None):
    """from_pretrained untied, with its loading info, without transformers' load report: with the decoder
    untied, a checkpoint saved tied (BERT's, the stand-in's) lacks the decoder's weight and bias, which
    the report lists as "MISSING ... newly initialized"; load_model sets both from the checkpoint
    (the word embeddings and the head's bias) and reports any other missing key itself."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return masked_lm.from_pretrained(source, revision=revision, tie_word_embeddings=False,
                                         output_loading_info=True)
    finally:
        hf_logging.set_verbosity(verbosity)


def load_model(spec: str, tokenizer, *, init_seed: int, dtype: str, device: torch.device,
               revision: str | None = None, lm_decoder: str = "tied") -> LoadedModel:
    """lm_decoder "untied": the decoder is initialised from the checkpoint's decoder weight, or,
    where the checkpoint has none (random-init models, checkpoints saved tied), from the word
    embeddings -- never randomly."""
    if spec.startswith(RANDOM_INIT_PREFIX):
        family, values = _random_init_config(spec[len(RANDOM_INIT_PREFIX):], tokenizer)
        # Seed a private copy of the RNG so building a model never shifts anyone else's draws.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            model = family.cls("masked_lm")(family.cls("config")(**values))
        info = {"id": spec, "revision": None, "init_seed": init_seed, "config": values}
        decoder_source = "word embeddings (a random-init model has no decoder of its own)"
        if lm_decoder == "untied":
            untie_lm_decoder(model, family.encoder_of(model).embeddings.word_embeddings.weight)
    else:
        identity = {}
        source = spec
        if is_standin(spec):
            folder, identity = resolve_standin(spec)
            source = str(folder)
        try:
            from transformers import AutoConfig

            family = family_of_model_type(AutoConfig.from_pretrained(source, revision=revision).model_type, repr(spec))
            masked_lm = family.cls("masked_lm")
            if lm_decoder == "untied":
                model, loading = _quiet_load(masked_lm, source, revision)
                expected = {f"{family.decoder}.weight", f"{family.decoder}.bias"}   # set just below
                others = sorted(set(loading["missing_keys"]) - expected)
                if others:   # transformers' own load report is silenced: say what it would have said
                    print(f"mezo-bench: model {spec}: not in the checkpoint, newly initialised: {', '.join(others)}",
                          file=sys.stderr)
                if loading.get("unexpected_keys"):
                    print(f"mezo-bench: model {spec}: in the checkpoint but unused by {masked_lm.__name__}: "
                          f"{', '.join(sorted(loading['unexpected_keys']))}", file=sys.stderr)
                if f"{family.decoder}.weight" in loading["missing_keys"]:
                    decoder_source = "word embeddings (the checkpoint has no decoder weight)"
                    decoder = family.encoder_of(model).embeddings.word_embeddings.weight
                else:
                    decoder_source = "checkpoint decoder weight"
                    decoder = family.module(model, family.decoder).weight
                untie_lm_decoder(model, decoder)
            else:
                model = masked_lm.from_pretrained(source, revision=revision)
        except HarnessError:
            raise
        except Exception as error:
            raise HarnessError(f"could not load model {spec!r} ({type(error).__name__}: {error}); "
                               f"offline, use a local path, 'pretrained:<name>' or 'random-init:<config>'") from None
        local = Path(source)
        revision_found = (f"sha256:{_weights_sha256(local)}" if local.is_dir() and not identity
                          else getattr(model.config, "_commit_hash", None) or revision)
        info = {"id": spec, "revision": identity.get("revision", revision_found),
                **({"package": identity["package"]} if identity else {})}
    if family.name != "roberta":
        info["family"] = family.name
    if len(tokenizer) > model.config.vocab_size:
        raise HarnessError(f"tokenizer has {len(tokenizer)} tokens but model {spec!r} only "
                           f"{model.config.vocab_size} embeddings")
    model.to(device=device, dtype=torch_dtype(dtype))
    model.eval()   # MeZO's forward passes run without dropout
    info["lm_decoder"] = ({"tied": False, "initialised_from": decoder_source} if lm_decoder == "untied"
                          else {"tied": True, "initialised_from": "word embeddings (the same parameter)"})
    info["num_parameters"] = sum(p.numel() for p in model.parameters())
    info["dtype"] = dtype
    return LoadedModel(model=model, info=info)


def as_sequence_classifier(masked_lm, num_labels: int, head_seed: int):
    """The family's sequence classifier (RobertaForSequenceClassification, BertForSequenceClassification)
    on the masked LM's encoder, with a new random head (what `from_pretrained` gives for a pretrained
    checkpoint, also for random-init ones). BERT's head reads the pooler, which a masked LM has not:
    it is new too, drawn with the head."""
    family = family_of(masked_lm)
    config = copy.deepcopy(masked_lm.config)
    config.num_labels = num_labels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(head_seed)
        classifier = family.cls("sequence_classifier")(config)
    loaded = family.encoder_of(classifier).load_state_dict(family.encoder_of(masked_lm).state_dict(), strict=False)
    if loaded.unexpected_keys or any(not key.startswith("pooler.") for key in loaded.missing_keys):
        raise HarnessError(f"the {family.name} classifier's encoder does not match the masked LM's: "
                           f"missing {loaded.missing_keys}, unexpected {loaded.unexpected_keys}")
    parameter = next(masked_lm.parameters())
    return classifier.to(device=parameter.device, dtype=parameter.dtype).eval()


def apply_lora(model, *, r: int, alpha: int, targets: tuple[str, ...], seed: int):
    """Inject peft LoRA adapters in place (B = 0, so the model's function is unchanged) and
    freeze everything else. Adapters are never merged: MeZO's eval-mode passes must see them."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise HarnessError("LoRA variants need peft: pip install 'mezo-bench[peft]'") from None
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0, bias="none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        get_peft_model(model, config)   # modifies `model` in place; we keep using it directly
    return model


def build_model_for_variant(variant, settings, tokenizer, num_labels: int, device: torch.device,
                            seed: int) -> LoadedModel:
    """The variant's model. New weights (a classification head, LoRA's A, the random tokens
    that initialise a prefix) are drawn from the run `seed`, as the reference seeds everything
    with the run seed before building the model; a random-init base model is drawn from
    `init_seed`, the same stand-in checkpoint for every seed."""
    lm_decoder = settings.lm_decoder if variant.head == "mlm" else "tied"   # a cls head has no decoder
    loaded = load_model(settings.model, tokenizer, init_seed=settings.init_seed, dtype=settings.dtype, device=device,
                        lm_decoder=lm_decoder)
    model, info = loaded.model, dict(loaded.info)
    if variant.head == "cls":
        model = as_sequence_classifier(model, num_labels, head_seed=seed)
        info["head"] = f"{type(model).__name__} (random head, seed {seed})"
        info.pop("lm_decoder")
    else:
        info["head"] = f"{type(model).__name__} label words"
    if variant.parameters in ("lora", "lora+lm-head"):
        model = apply_lora(model, r=settings.lora_r, alpha=settings.lora_alpha, targets=settings.lora_targets,
                           seed=seed)
        info["lora"] = {"r": settings.lora_r, "alpha": settings.lora_alpha, "targets": list(settings.lora_targets),
                        "init_seed": seed}
    if variant.parameters == "prefix":
        from harness.backends.prefix import apply_prefix

        info["prefix"] = apply_prefix(model, num_prefix=settings.num_prefix, seed=seed)
    if variant.parameters == "none":
        model.requires_grad_(False)
    if variant.parameters in ("lm-head", "lora+lm-head"):
        # The reference's LoRA freezing rule (MeZO medium_models/run.py) freezes only `roberta.*`
        # parameters without "lora" in their name, so the whole LM head stays trainable.
        head = family_of(model).head + "."
        for name, param in model.named_parameters():
            if name.startswith(head):
                param.requires_grad_(True)
            elif variant.parameters == "lm-head":
                param.requires_grad_(False)
    info["num_parameters"] = sum(p.numel() for p in model.parameters())
    return LoadedModel(model=model, info=info)


class MaskedLMLabelWordHead:
    """Label-word logits at the mask of a masked LM of any family (prompt-based classification)."""

    def __init__(self, model, label_token_ids: list[int]):
        self.model = model
        self.family = family_of(model)
        self.label_token_ids = torch.tensor(label_token_ids, device=model.device)

    def features(self, batch: Batch) -> torch.Tensor:
        """The LM head decoder's input at <mask>: dense -> GELU -> LayerNorm of the hidden state."""
        encoder = self.family.encoder_of(self.model)
        hidden = encoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        at_mask = hidden[torch.arange(hidden.shape[0], device=hidden.device), batch.mask_positions]
        return self.family.head_features(self.model, at_mask)

    def label_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(decoder weight, decoder bias): the parameters whose label-word rows give the logits."""
        decoder = self.family.module(self.model, self.family.decoder)
        return decoder.weight, decoder.bias

    def __call__(self, batch: Batch) -> torch.Tensor:
        weight, bias = self.label_rows()
        return (self.features(batch) @ weight[self.label_token_ids].T + bias[self.label_token_ids]).float()


class SequenceClassifierHead:
    """Logits of a sequence classifier (RoBERTa's head reads the <s> token, BERT's the pooled [CLS])."""

    def __init__(self, model):
        self.model = model

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()


class HFBackend:
    """harness.backends.base.Backend on Hugging Face transformers."""

    name = "hf"
    ragged_batches = False
    memory_phases = ("inference", "mezo_step", "first_order_step")
    memory_in_process = False
    measures_prefix_cache = False

    def build_model(self, variant, settings, tokenizer, num_labels: int, device: torch.device,
                    seed: int) -> LoadedModel:
        return build_model_for_variant(variant, settings, tokenizer, num_labels, device, seed)

    def head(self, variant, model, label_token_ids: list[int]):
        return MaskedLMLabelWordHead(model, label_token_ids) if variant.head == "mlm" else SequenceClassifierHead(model)

    def trainable_parameters(self, model) -> list[tuple[str, torch.Tensor]]:
        return [(name, param) for name, param in model.named_parameters() if param.requires_grad]
