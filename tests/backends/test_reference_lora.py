"""The reference's "MeZO (LoRA)": whether the LoRA adapters reach the loss depends on loralib's version.

Reference: github.com/princeton-nlp/MeZO at 552cb1b710767f9a6e1dc8f9645d7640376f9941,
RoBERTa code under ``medium_models/``. What it does, paraphrased:

* ``medium_models/src/modeling_roberta.py`` (``RobertaSelfAttention.__init__``, l.195-205): with
  ``config.apply_lora`` the attention's ``query`` and ``value`` are built as
  ``lora.Linear(config.hidden_size, self.all_head_size, config.lora_r, lora_alpha=config.lora_alpha)``
  (``import loralib as lora``; loralib defaults otherwise: ``merge_weights=True``, ``lora_dropout=0``,
  bias on); ``key`` stays an ``nn.Linear``. The pretrained ``query``/``value`` weight and bias reach
  ``lora.Linear.weight``/``bias`` by ``from_pretrained``; ``lora_A``/``lora_B`` are not in the checkpoint
  and keep loralib's init (A Kaiming-uniform, B = 0). ``RobertaLMHead`` (l.1173-1183) shares
  ``decoder.bias = self.bias``.
* ``medium_models/src/models.py`` (``RobertaModelForPromptFinetuning``, l.185-218): ``roberta =
  RobertaModel(config)``, ``lm_head = RobertaLMHead(config)``, ``classifier = nn.Linear(hidden,
  num_labels)``; the decoder is not tied to the input embeddings. The prompt forward
  (``model_for_prompting_forward``) takes the ``<mask>`` state, ``lm_head`` logits at the label words,
  cross-entropy; ``classifier`` is used only when there is no ``label_word_list``.
* ``medium_models/run.py`` (l.939-942), with ``--apply_lora`` (README: ``--lora_r 8 --lora_alpha 16``)::

      for name, param in model.named_parameters():
          if (name.startswith('roberta') and "lora" not in name) or (name.startswith('opt') and ...):
              param.requires_grad_(False)

  so everything outside ``roberta.*`` stays trainable: ``lm_head.*`` and ``classifier.*`` too.
* ``medium_models/src/trainer.py``: ``zo_forward`` (l.226-227) begins with ``model.eval()``; the
  efficient ZO step (``efficient_perturb_parameters``, l.242-247, and l.595-660) reseeds, adds
  ``scaling_factor * z * eps`` to ``param.data`` of every ``requires_grad`` parameter (+1, then -2,
  then +1), ``projected_grad = (loss1 - loss2) / (2 * eps)`` and updates
  ``param.data - lr * (projected_grad * z + wd * param.data)``. Nothing in the ZO path calls
  ``model.train()`` (only the backprop branch's ``training_step`` does). ``from_pretrained`` also ends
  with ``model.eval()``.

So the ZO path runs the model only after ``nn.Module.eval()``, which sets ``training`` through
``child.train(False)`` on every submodule and never calls a submodule's own ``eval()``. What loralib's
``Linear`` does then depends on its version:

* loralib 0.1.1 (PyPI upload 2021-09-17; its ``layers.py`` is microsoft/LoRA's initial commit,
  2eb74c2d): it merges only in an ``eval()`` override, and its ``train(mode)`` unmerges whatever
  ``mode`` is. ``model.eval()`` therefore never merges: ``forward`` stays ``W x + b + scaling * B A x``
  and every perturbation or update of A and B reaches the loss. MeZO (LoRA) is MeZO on the adapters
  and the LM head.
* loralib 0.1.2 (PyPI upload 2023-08-27, the day microsoft/LoRA's ``setup.py`` went from 0.1.0 to
  0.1.2, 3f5c193f): ``train(False)`` adds ``B @ A * scaling`` to ``weight`` once and sets ``merged``
  (on GitHub main since f0ee35dd, 2022-10-16, "merge weights when train(mode=False) is called");
  ``forward`` is then ``F.linear(x, weight, bias)`` only. The merge happens at load time (B = 0: W is
  unchanged), and every later perturbation or update of A and B is invisible to the loss. MeZO (LoRA)
  is MeZO on the LM head alone, on the pretrained encoder.

Which of the two produced the paper's numbers depends on the loralib the authors had, and the
reference pins none (``medium_models/README.md`` names only torch and transformers versions). When the
code was published (2023-05-23) PyPI served only 0.1.1: live adapters plus a trainable LM head.
Anyone installing from PyPI after 2023-08-27, or from GitHub main after 2022-10-16, gets the merge:
dead adapters, MeZO on the LM head only.

What execution below shows (a model built with either loralib; 0.1.2 is the dev extra's pin, 0.1.1 is
loaded as a separate module ``loralib_0_1_1`` from ``$MEZO_BENCH_LORALIB_0_1_1``, which ``nox -s
tests`` installs and sets; without it the 0.1.1 cases skip):

* both versions: the trainable set under the reference's rule is exactly the query/value
  ``lora_A``/``lora_B`` plus ``lm_head.{dense,layer_norm}.{weight,bias}``, ``lm_head.decoder.weight``,
  ``lm_head.bias`` (shared with ``lm_head.decoder.bias``) and ``classifier.{weight,bias}``; in train
  mode (unmerged) adapter perturbations change the logits; in eval mode each ``lm_head`` parameter
  changes the loss; ``classifier`` is trainable but, in prompt mode, unused;
* 0.1.2: after ``model.eval()`` the layers are merged; MeZO perturbations of the adapters (eps 1e-3
  and 1.0, B zero or not) leave the logits and the loss bit-identical, so their projected gradient is
  exactly 0; a full reference-style MeZO run moves ``lm_head`` (and A, B, uselessly), and its result is
  exactly a plain RoBERTa with the pretrained encoder and a MeZO-tuned head;
* 0.1.1: after ``model.eval()`` the layers are not merged (only calling a layer's own ``eval()``
  merges); adapter perturbations (A alone, B alone, both) change the eval-mode logits and loss, which
  equal the unmerged train-mode ones; a full reference-style MeZO run gives other losses than the
  same run with dead adapters (0.1.2, same init, same seeds, so the same z for every parameter) and
  ends elsewhere than the run with the adapters frozen; with the adapters frozen both versions
  coincide bit for bit; and the trained model differs from the pretrained encoder plus its own tuned
  head exactly by the adapters (setting B to 0 gives that plain model bit for bit).

Test conveniences (not in the reference): a tiny random-init RoBERTa, dropout 0 (so train mode is
deterministic; eval mode ignores dropout anyway) and ``load_state_dict`` from a LoRA-free twin
standing in for ``from_pretrained``, followed by the ``model.eval()`` that ``from_pretrained`` ends
with (and that ``zo_forward`` repeats). (With transformers 5.x, ``from_pretrained`` itself would leave
the missing ``lora_A``/``lora_B`` uninitialised rather than at loralib's init, hence the stand-in.)
"""

import copy
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

import loralib
import pytest
import torch
from torch import nn
from transformers import RobertaConfig, RobertaForMaskedLM
from transformers.models.roberta.modeling_roberta import RobertaLMHead, RobertaModel

LORA_R, LORA_ALPHA = 8, 16          # medium_models/README.md: --lora_r 8 --lora_alpha 16
LABEL_WORDS = [5, 7]                # two label words, as for SST-2
MASK_ID = 4
LAYERS = 2
HEAD_PARAMS = {"lm_head.dense.weight", "lm_head.dense.bias", "lm_head.layer_norm.weight",
               "lm_head.layer_norm.bias", "lm_head.decoder.weight", "lm_head.bias"}
CLASSIFIER_PARAMS = {"classifier.weight", "classifier.bias"}
LORA_PARAMS = {f"roberta.encoder.layer.{i}.attention.self.{proj}.lora_{ab}"
               for i in range(LAYERS) for proj in ("query", "value") for ab in "AB"}
LORALIB_0_1_1_ENV = "MEZO_BENCH_LORALIB_0_1_1"
LORALIB_VERSIONS = ["0.1.2", "0.1.1"]


def load_loralib_0_1_1():
    """loralib 0.1.1 from the folder `nox -s tests` installs it into (pip --target), as its own module
    object ``loralib_0_1_1`` beside the installed 0.1.2."""
    target = os.environ.get(LORALIB_0_1_1_ENV)
    if not target:
        pytest.skip(f"${LORALIB_0_1_1_ENV} is unset: `nox -s tests` installs loralib 0.1.1 beside 0.1.2 "
                    "and sets it (or: pip install --no-deps --target DIR loralib==0.1.1)")
    name = "loralib_0_1_1"
    if name in sys.modules:
        return sys.modules[name]
    package = Path(target) / "loralib"
    assert (package / "layers.py").is_file(), f"${LORALIB_0_1_1_ENV}={target} holds no loralib/layers.py"
    versions = [d.version for d in importlib.metadata.distributions(path=[target])
                if d.metadata["Name"] == "loralib"]
    assert versions == ["0.1.1"], versions
    spec = importlib.util.spec_from_file_location(name, package / "__init__.py",
                                                  submodule_search_locations=[str(package)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # before exec: `from .layers import *` resolves loralib_0_1_1.layers
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        sys.modules.pop(f"{name}.layers", None)
        sys.modules.pop(f"{name}.utils", None)
        raise
    return module


def loralib_for(version: str):
    if version == "0.1.2":
        assert importlib.metadata.version("loralib") == "0.1.2"    # the dev extra's pin
        return loralib
    module = load_loralib_0_1_1()
    assert module.Linear is not loralib.Linear
    assert Path(module.layers.__file__).resolve().parent == (Path(os.environ[LORALIB_0_1_1_ENV]) / "loralib").resolve()
    return module


@pytest.fixture(params=LORALIB_VERSIONS, ids=lambda v: f"loralib-{v}")
def lora_any(request):
    return loralib_for(request.param)


@pytest.fixture
def lora_0_1_2():
    return loralib_for("0.1.2")


@pytest.fixture
def lora_0_1_1():
    return loralib_for("0.1.1")


def tiny_config(apply_lora: bool) -> RobertaConfig:
    config = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=40, type_vocab_size=1,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                           tie_word_embeddings=False)
    # medium_models/src/modeling_roberta.py RobertaConfig: apply_lora, lora_r, lora_alpha
    config.apply_lora, config.lora_r, config.lora_alpha = apply_lora, LORA_R, LORA_ALPHA
    return config


class ReferencePromptModel(nn.Module):
    """medium_models/src/models.py RobertaModelForPromptFinetuning, with the reference's LoRA layers
    built from the given loralib module (``lora``)."""

    def __init__(self, config: RobertaConfig, lora=None):
        super().__init__()
        self.config = config
        self.roberta = RobertaModel(config)               # with pooler, as RobertaModel(config) there
        self.lm_head = RobertaLMHead(config)
        self.lm_head.decoder.bias = self.lm_head.bias     # reference RobertaLMHead.__init__
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        if getattr(config, "apply_lora", False):          # reference RobertaSelfAttention.__init__
            for layer in self.roberta.encoder.layer:
                attn = layer.attention.self
                attn.query = lora.Linear(config.hidden_size, attn.all_head_size, config.lora_r,
                                         lora_alpha=config.lora_alpha)
                attn.value = lora.Linear(config.hidden_size, attn.all_head_size, config.lora_r,
                                         lora_alpha=config.lora_alpha)
        self.label_word_list = torch.tensor(LABEL_WORDS)

    def forward(self, input_ids, attention_mask, mask_pos, labels):
        """model_for_prompting_forward: lm_head at <mask>, label-word logits, cross-entropy.

        Also returns the full-vocabulary logits at every position (a stricter check than the loss)."""
        sequence_output = self.roberta(input_ids, attention_mask=attention_mask)[0]
        mask_output = sequence_output[torch.arange(sequence_output.size(0)), mask_pos]
        logits = self.lm_head(mask_output)[:, self.label_word_list]
        loss = nn.CrossEntropyLoss()(logits.view(-1, logits.size(-1)), labels.view(-1))
        return loss, self.lm_head(sequence_output)


def lora_layers(model):
    """The loralib Linear layers (of either loralib module)."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear) and hasattr(m, "lora_A")]
    assert len(layers) == 2 * LAYERS
    return layers


def apply_reference_freeze(model):
    """medium_models/run.py l.939-942 (the 'opt' half cannot match a RoBERTa)."""
    for name, param in model.named_parameters():
        if name.startswith("roberta") and "lora" not in name:
            param.requires_grad_(False)


def build_reference(lora, seed=0):
    """(pretrained LoRA-free twin, LoRA model as the reference has it after loading, not yet in eval
    mode). The same seed gives the same weights with either loralib."""
    torch.manual_seed(seed)
    pretrained = ReferencePromptModel(tiny_config(apply_lora=False)).eval()
    torch.manual_seed(seed + 1)
    model = ReferencePromptModel(tiny_config(apply_lora=True), lora)
    missing, unexpected = model.load_state_dict(pretrained.state_dict(), strict=False)   # ~ from_pretrained
    assert set(missing) == LORA_PARAMS and unexpected == []
    for layer in lora_layers(model):
        assert isinstance(layer, lora.Linear)
        assert layer.merge_weights and not layer.merged and layer.scaling == LORA_ALPHA / LORA_R
        assert torch.count_nonzero(layer.lora_B) == 0 and torch.count_nonzero(layer.lora_A) > 0
    apply_reference_freeze(model)
    return pretrained, model


def make_batch(seed=0, batch=8, length=12):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 100, (batch, length), generator=g)
    input_ids[:, 0], input_ids[:, -1] = 0, 2
    mask_pos = torch.randint(1, length - 1, (batch,), generator=g)
    input_ids[torch.arange(batch), mask_pos] = MASK_ID
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "mask_pos": mask_pos,
            "labels": torch.randint(0, len(LABEL_WORDS), (batch,), generator=g)}


def zo_forward(model, inputs):
    """medium_models/src/trainer.py zo_forward: model.eval() first, then the loss."""
    model.eval()
    with torch.no_grad():
        return model(**inputs)


def perturb(params, seed, eps, scaling_factor=1.0):
    """medium_models/src/trainer.py efficient_perturb_parameters."""
    torch.manual_seed(seed)
    for _, param in params:
        z = torch.normal(mean=0, std=1, size=param.data.size(), dtype=param.data.dtype)
        param.data = param.data + scaling_factor * z * eps


def mezo_step(model, params, inputs, seed, eps, lr=1e-4, weight_decay=0.0):
    """One efficient-ZO step of medium_models/src/trainer.py (num_zs = 1, no trainer optimizer)."""
    perturb(params, seed, eps)
    loss1, logits1 = zo_forward(model, inputs)
    perturb(params, seed, eps, scaling_factor=-2)
    loss2, logits2 = zo_forward(model, inputs)
    projected_grad = (loss1 - loss2) / (2 * eps)
    perturb(params, seed, eps)
    torch.manual_seed(seed)
    for _, param in params:
        z = torch.normal(mean=0, std=1, size=param.data.size(), dtype=param.data.dtype)
        param.data = param.data - lr * (projected_grad * z + weight_decay * param.data)
    return loss1, loss2, projected_grad, logits1, logits2


def named(model, names):
    params = dict(model.named_parameters())
    return [(n, params[n]) for n in sorted(names)]


def randomise_b(model, seed=7):
    """Not the reference (B = 0 there): B non-zero, so A alone also reaches the output."""
    torch.manual_seed(seed)
    for layer in lora_layers(model):
        layer.lora_B.data = torch.randn_like(layer.lora_B)


def reference_mezo_run(model, inputs, steps=6, freeze_adapters=False):
    """Reference-style MeZO over the model's requires_grad parameters (in named_parameters order, as
    the reference's trainer collects them): the projected gradients and the final eval-mode output."""
    if freeze_adapters:
        for _, param in named(model, LORA_PARAMS):
            param.requires_grad_(False)
    model.eval()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    grads = [mezo_step(model, trainable, inputs, seed=100 + step, eps=1e-3, lr=1e-2)[2]
             for step in range(steps)]
    return torch.stack(grads), zo_forward(model, inputs)


def plain_model_with_head_of(model, pretrained):
    """A LoRA-free RoBERTa holding ``model``'s non-LoRA state (encoder, tuned head)."""
    plain = copy.deepcopy(pretrained)
    plain.load_state_dict({n: p for n, p in model.state_dict().items() if "lora" not in n})
    return plain


# -- both loralib versions ------------------------------------------------------------------------


def test_installed_loralib_is_the_pinned_0_1_2():
    assert importlib.metadata.version("loralib") == "0.1.2"
    assert "def eval(" not in Path(loralib.layers.__file__).read_text()     # merges in train(False)


def test_loralib_0_1_1_merges_only_in_its_eval_override(lora_0_1_1):
    assert lora_0_1_1.__name__ == "loralib_0_1_1"
    assert "eval" in vars(lora_0_1_1.Linear) and "eval" not in vars(loralib.Linear)


def test_reference_rule_leaves_adapters_lm_head_and_classifier_trainable(lora_any):
    _, model = build_reference(lora_any)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == LORA_PARAMS | HEAD_PARAMS | CLASSIFIER_PARAMS
    # lm_head.decoder.bias is lm_head.bias (named_parameters lists the shared tensor once)
    assert model.lm_head.decoder.bias is model.lm_head.bias
    # loralib freezes its own weight; the rule freezes everything else under roberta.*
    for layer in lora_layers(model):
        assert not layer.weight.requires_grad and not layer.bias.requires_grad


def test_from_pretrained_leaves_the_model_in_eval_mode(tmp_path):
    torch.manual_seed(0)
    RobertaForMaskedLM(tiny_config(apply_lora=False)).save_pretrained(tmp_path)
    assert RobertaForMaskedLM.from_pretrained(tmp_path).training is False


@pytest.mark.parametrize("eps", [1e-3, 1.0])
def test_same_adapter_perturbation_changes_the_logits_in_train_mode(lora_any, eps):
    """Control: unmerged (train mode), the adapters reach the forward."""
    _, model = build_reference(lora_any)
    model.train()
    for layer in lora_layers(model):
        assert not layer.merged
    inputs = make_batch()
    with torch.no_grad():
        base_loss, base_logits = model(**inputs)
    adapters = named(model, LORA_PARAMS)
    perturb(adapters, seed=100, eps=eps)
    with torch.no_grad():
        loss, logits = model(**inputs)
    assert not torch.equal(logits, base_logits) and loss.item() != base_loss.item()
    # with B non-zero, A alone and B alone each reach the output
    randomise_b(model)
    for which in ("lora_A", "lora_B"):
        with torch.no_grad():
            before = model(**inputs)[1]
        perturb([(n, p) for n, p in adapters if n.endswith(which)], seed=101, eps=eps)
        with torch.no_grad():
            assert not torch.equal(model(**inputs)[1], before), which


@pytest.mark.parametrize("name", sorted(HEAD_PARAMS))
def test_each_lm_head_parameter_changes_the_eval_mode_loss(lora_any, name):
    """Control: in the same eval-mode model, the head does reach the loss."""
    _, model = build_reference(lora_any)
    model.eval()
    inputs = make_batch()
    base_loss, _ = zo_forward(model, inputs)
    perturb(named(model, {name}), seed=100, eps=1e-3)
    assert zo_forward(model, inputs)[0].item() != base_loss.item()


def test_classifier_is_trainable_but_unused_in_prompt_mode(lora_any):
    _, model = build_reference(lora_any)
    model.eval()
    inputs = make_batch()
    base_loss, base_logits = zo_forward(model, inputs)
    perturb(named(model, CLASSIFIER_PARAMS), seed=100, eps=1.0)
    loss, logits = zo_forward(model, inputs)
    assert torch.equal(loss, base_loss) and torch.equal(logits, base_logits)


def test_at_load_b_zero_the_lora_model_equals_the_pretrained_one(lora_any):
    pretrained, model = build_reference(lora_any)
    model.eval()
    params = dict(model.named_parameters())
    for name, value in pretrained.named_parameters():
        assert torch.equal(params[name], value), name     # W (+ 0 @ A if merged): bit-identical
    inputs = make_batch()
    loss, logits = zo_forward(model, inputs)
    ref_loss, ref_logits = zo_forward(pretrained, inputs)
    assert torch.equal(loss, ref_loss) and torch.equal(logits, ref_logits)


def test_with_adapters_frozen_both_versions_run_the_same_mezo(lora_0_1_2, lora_0_1_1):
    """B stays 0: the unmerged 0.1.1 forward adds exactly 0, the merged 0.1.2 weight is W + 0."""
    inputs = make_batch()
    runs = [reference_mezo_run(build_reference(lora)[1], inputs, freeze_adapters=True)
            for lora in (lora_0_1_2, lora_0_1_1)]
    (grads_2, (loss_2, logits_2)), (grads_1, (loss_1, logits_1)) = runs
    assert torch.count_nonzero(grads_2) > 0
    assert torch.equal(grads_1, grads_2) and torch.equal(loss_1, loss_2) and torch.equal(logits_1, logits_2)


# -- loralib 0.1.2 (PyPI since 2023-08-27): merged, dead adapters ---------------------------------


def test_eval_mode_merges_at_load_with_b_zero_and_keeps_the_pretrained_weights(lora_0_1_2):
    pretrained, model = build_reference(lora_0_1_2)
    model.eval()
    before = {n: p.clone() for n, p in pretrained.named_parameters()}
    for layer in lora_layers(model):
        assert layer.merged and not layer.training
    params = dict(model.named_parameters())
    for name, value in before.items():
        assert torch.equal(params[name], value), name     # W + 0 @ A: bit-identical
    inputs = make_batch()
    loss, logits = zo_forward(model, inputs)
    ref_loss, ref_logits = zo_forward(pretrained, inputs)
    assert torch.equal(loss, ref_loss) and torch.equal(logits, ref_logits)


@pytest.mark.parametrize("eps", [1e-3, 1.0])
@pytest.mark.parametrize("b_at_merge", ["zero", "random"])
def test_adapter_perturbations_leave_the_eval_mode_loss_bit_identical(lora_0_1_2, eps, b_at_merge):
    _, model = build_reference(lora_0_1_2)
    if b_at_merge == "random":      # not the reference (B = 0 there): B non-zero before the merge
        randomise_b(model)
    model.eval()                     # what from_pretrained leaves, and what zo_forward repeats
    inputs = make_batch()
    base_loss, base_logits = zo_forward(model, inputs)
    adapters = named(model, LORA_PARAMS)
    for step in range(4):
        loss1, loss2, projected_grad, logits1, logits2 = mezo_step(model, adapters, inputs, seed=100 + step, eps=eps)
        assert torch.equal(loss1, base_loss) and torch.equal(loss2, base_loss)
        assert torch.equal(logits1, base_logits) and torch.equal(logits2, base_logits)
        assert projected_grad.item() == 0.0
        # make B clearly non-zero for the next steps: the adapters would now change W @ x + B A x
        for _, param in adapters:
            param.data = param.data + torch.randn_like(param)
        assert torch.equal(zo_forward(model, inputs)[1], base_logits)
    for layer in lora_layers(model):
        assert layer.merged and torch.count_nonzero(layer.lora_B) > 0


def test_reference_mezo_lora_run_is_mezo_on_the_head(lora_0_1_2):
    """Reference-style MeZO over the whole trainable set: the encoder never changes; the result is a
    plain RoBERTa with the pretrained encoder and a MeZO-tuned lm_head."""
    pretrained, model = build_reference(lora_0_1_2)
    inputs = make_batch()
    start = {n: p.clone() for n, p in model.named_parameters()}
    grads, (loss, logits) = reference_mezo_run(model, inputs)
    assert torch.count_nonzero(grads) > 0
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
    assert moved == LORA_PARAMS | HEAD_PARAMS | CLASSIFIER_PARAMS   # A and B are updated, uselessly
    # plain RoBERTa (no LoRA) + the tuned head: identical logits and loss
    head_only = plain_model_with_head_of(model, pretrained)
    state = model.state_dict()
    for name, value in pretrained.state_dict().items():
        if name.startswith("roberta"):
            assert torch.equal(state[name], value), name        # encoder (incl. merged W) unchanged
    ref_loss, ref_logits = zo_forward(head_only, inputs)
    assert torch.equal(loss, ref_loss) and torch.equal(logits, ref_logits)
    # and the adapters, whatever their values, still do not matter
    for layer in lora_layers(model):
        layer.lora_A.data.normal_()
        layer.lora_B.data.normal_()
    assert torch.equal(zo_forward(model, inputs)[1], logits)


# -- loralib 0.1.1 (the only PyPI release until 2023-08-27): unmerged, live adapters --------------


def test_loralib_0_1_1_model_eval_never_merges(lora_0_1_1):
    pretrained, model = build_reference(lora_0_1_1)
    randomise_b(model)               # so a merge would show in W
    model.eval()                     # what from_pretrained leaves, and what zo_forward repeats
    for layer in lora_layers(model):
        assert not layer.training and layer.merged is False
    model.train(False)
    assert all(layer.merged is False for layer in lora_layers(model))
    params = dict(model.named_parameters())
    for name, value in pretrained.named_parameters():
        assert torch.equal(params[name], value), name     # W untouched
    # only a layer's own eval() merges, and nn.Module.eval() never calls it
    layer = lora_layers(model)[0]
    weight = layer.weight.clone()
    layer.eval()
    assert layer.merged is True and not torch.equal(layer.weight, weight)


@pytest.mark.parametrize("eps", [1e-3, 1.0])
@pytest.mark.parametrize("b_at_load", ["zero", "random"])
def test_loralib_0_1_1_adapter_perturbations_change_the_eval_mode_loss(lora_0_1_1, eps, b_at_load):
    _, model = build_reference(lora_0_1_1)
    if b_at_load == "random":
        randomise_b(model)
    model.eval()
    inputs = make_batch()
    base_loss, base_logits = zo_forward(model, inputs)
    model.train()                    # unmerged train mode, dropout 0: the same forward
    with torch.no_grad():
        train_loss, train_logits = model(**inputs)
    assert torch.equal(train_loss, base_loss) and torch.equal(train_logits, base_logits)
    adapters = named(model, LORA_PARAMS)
    # the reference's ZO step on the adapters (B = 0 at load: B's z makes B A non-zero at once)
    loss1, loss2, projected_grad, logits1, logits2 = mezo_step(model, adapters, inputs, seed=100, eps=eps)
    assert loss1.item() != base_loss.item() and loss2.item() != base_loss.item()
    assert not torch.equal(logits1, base_logits) and not torch.equal(logits2, base_logits)
    assert projected_grad.item() != 0.0
    assert all(not layer.merged for layer in lora_layers(model))
    # A alone and B alone (B non-zero) each reach the eval-mode loss
    randomise_b(model, seed=8)
    for which in ("lora_A", "lora_B"):
        before_loss, before_logits = zo_forward(model, inputs)
        perturb([(n, p) for n, p in adapters if n.endswith(which)], seed=101, eps=eps)
        loss, logits = zo_forward(model, inputs)
        assert loss.item() != before_loss.item() and not torch.equal(logits, before_logits), which


def test_loralib_0_1_1_reference_mezo_lora_run_trains_adapters_and_head(lora_0_1_2, lora_0_1_1):
    """The same reference-style MeZO run (same init, seeds, trainable set) under 0.1.1 is MeZO on the
    adapters and the LM head: not the dead-adapter run of 0.1.2, not the run with adapters frozen."""
    inputs = make_batch()
    pretrained, model = build_reference(lora_0_1_1)
    start = {n: p.clone() for n, p in model.named_parameters()}
    grads, (loss, logits) = reference_mezo_run(model, inputs)
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, start[n])}
    assert moved == LORA_PARAMS | HEAD_PARAMS | CLASSIFIER_PARAMS
    assert all(not layer.merged and torch.count_nonzero(layer.lora_B) > 0 for layer in lora_layers(model))
    state = model.state_dict()
    for name, value in pretrained.state_dict().items():
        if name.startswith("roberta"):
            assert torch.equal(state[name], value), name        # W untouched: the adapters sit beside it

    # 0.1.2, same init and seeds (so the same z for every parameter): dead adapters, other losses
    dead_grads, (dead_loss, dead_logits) = reference_mezo_run(build_reference(lora_0_1_2)[1], inputs)
    assert grads[0].item() != dead_grads[0].item()         # from the first step on
    assert not torch.equal(logits, dead_logits) and loss.item() != dead_loss.item()
    # 0.1.1 with the adapters frozen (MeZO on the head alone): ends elsewhere too
    _, frozen = build_reference(lora_0_1_1)
    _, (frozen_loss, frozen_logits) = reference_mezo_run(frozen, inputs, freeze_adapters=True)
    assert not torch.equal(logits, frozen_logits) and loss.item() != frozen_loss.item()

    # the trained model is the pretrained encoder + its tuned head + the trained adapters: with B set
    # to 0 it is that plain model bit for bit, with the trained B it is not
    head_only = plain_model_with_head_of(model, pretrained)
    head_loss, head_logits = zo_forward(head_only, inputs)
    assert not torch.equal(logits, head_logits) and loss.item() != head_loss.item()
    for layer in lora_layers(model):
        layer.lora_B.data.zero_()
    no_adapter_loss, no_adapter_logits = zo_forward(model, inputs)
    assert torch.equal(no_adapter_loss, head_loss) and torch.equal(no_adapter_logits, head_logits)
