"""`mezo-bench reconstruct`: a MeZO run's fine-tuned weights rebuilt from its base model and its
trajectory (harness.zo.trajectory), without any forward pass, written as a folder that
`from_pretrained` loads (safetensors, config, tokenizer).

The base model is rebuilt as the run built it: the record's protocol (its hash must match),
variant, seed and data (the tokenizer's sha256 must match). A variant served by SGLang is
rebuilt on Hugging Face: its parameters are the same tensors under the same names, so MeZO
draws the same z for them. LoRA adapters are merged into their base weights before saving,
so the folder is a plain RobertaForMaskedLM. On CPU the rebuilt weights are bit-identical to
the run's; on CUDA they are as exact as its z stream is for the same GPU model and torch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from harness.backends.registry import get_backend
from harness.backends.tokenizers import load_tokenizer
from harness.core.errors import HarnessError
from harness.core.files import check_output_dir
from harness.protocol.loading import load_protocol
from harness.protocol.variants import get_variant
from harness.results.store import read_record
from harness.tasks.data import load_task_data
from harness.zo.mezo import CHUNK_ELEMENTS, MeZO
from harness.zo.trajectory import Trajectory, replay


def reconstruct(record_path: Path, step: str, out_dir: Path, data_dir: str | None = None) -> Path:
    """Rebuild the weights at `step` ("best", "final" or a step number) into `out_dir`."""
    record = read_record(record_path)
    trajectory = _load_trajectory(record_path, record)
    steps = _resolve_step(step, record, trajectory)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise HarnessError(f"--out {out_dir} exists and is not an empty folder")
    check_output_dir(out_dir, "--out")
    device = torch.device(trajectory.device_type)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HarnessError(f"{record_path}: the run drew z on CUDA; replaying it needs a CUDA device")

    protocol = load_protocol(record["protocol"]["path"])
    profile, variant = record["protocol"]["profile"], get_variant(record["variant"]["name"])
    if protocol.settings_hash(profile, variant.name) != record["protocol"]["hash"]:
        raise HarnessError(f"{record_path}: made with protocol hash {record['protocol']['hash']}, but "
                           f"{protocol.path} now gives {protocol.settings_hash(profile, variant.name)}")
    if variant.linear_probe or variant.parameters == "prefix":
        raise HarnessError(f"{record_path}: a {variant.name} run cannot be rebuilt as a plain RobertaForMaskedLM "
                           + ("(it starts from a linear probe fitted on its data, which the trajectory does not hold)"
                              if variant.linear_probe else "(its prefix keys and values are not part of that class)"))
    settings = protocol.run_settings(profile, variant.name)
    data = load_task_data(protocol.task, data_dir)
    tokenizer = load_tokenizer(settings.tokenizer, data.train_sentences(), settings.label_words)
    if tokenizer.info["sha256"] != record["tokenizer"]["sha256"]:
        raise HarnessError(f"{record_path}: the tokenizer rebuilt from {data.source} differs from the run's "
                           f"(sha256 {tokenizer.info['sha256'][:12]} vs {record['tokenizer']['sha256'][:12]})")

    model = get_backend("hf").build_model(variant, settings, tokenizer.tokenizer, data.task.num_labels, device,
                                         record["seed"]).model
    parameters = dict(model.named_parameters())
    missing = [name for name in trajectory.parameters if name not in parameters]
    if missing:
        raise HarnessError(f"{record_path}: the rebuilt model lacks the trajectory's parameters {missing[:3]}")
    with MeZO([(name, parameters[name]) for name in trajectory.parameters], lr=0.0, eps=trajectory.eps,
              weight_decay=trajectory.weight_decay, z_stream=trajectory.z_stream,
              chunk_elements=trajectory.chunk_elements or CHUNK_ELEMENTS) as engine:
        replay(engine, trajectory, steps)
    _merge_lora(model)
    _own_decoder_bias(model)
    provenance = {"run_id": record["run_id"], "step": steps, "protocol_hash": record["protocol"]["hash"],
                  "trajectory_sha256": record["trajectory"]["sha256"], "device_type": trajectory.device_type}
    return _write_folder(model, tokenizer.tokenizer, provenance, out_dir)


def _load_trajectory(record_path: Path, record: dict) -> Trajectory:
    if "trajectory" not in record:
        raise HarnessError(f"{record_path}: no trajectory (a first-order, MeZO-Adam or untrained run, or a record "
                           f"made before trajectories were kept)")
    path = Path(record_path).with_name(record["trajectory"]["file"])
    if not path.is_file():
        raise HarnessError(f"trajectory not found: {path}")
    if hashlib.sha256(path.read_bytes()).hexdigest() != record["trajectory"]["sha256"]:
        raise HarnessError(f"{path}: sha256 differs from the record's: the file was changed")
    return Trajectory.load(path)


def _resolve_step(step: str, record: dict, trajectory: Trajectory) -> int:
    if step == "final":   # a diverged run's last step made its weights non-finite: the one before it
        return record["diverged_at"] - 1 if record.get("diverged_at") else trajectory.steps
    if step == "best":
        best = record["metrics"]["best_step"]
        if best is None:
            raise HarnessError("the run has no best-dev step (it diverged before its first evaluation)")
        return best
    if not step.isdigit() or int(step) > trajectory.steps:
        raise HarnessError(f"--step must be best, final or a step in 0..{trajectory.steps}, got {step!r}")
    return int(step)


def _merge_lora(model) -> None:
    """peft LoRA layers merged into their base layers and replaced by them (a plain model)."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:
        return
    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())


def _own_decoder_bias(model) -> None:
    """An untied decoder shares its bias with the LM head (as in the reference); safetensors keeps
    a shared tensor once, and from_pretrained would then initialise the decoder's bias anew. A
    copy of the same values keeps the saved model's logits the run's."""
    head = getattr(model, "lm_head", None)
    if head is not None and not model.config.tie_word_embeddings and head.decoder.bias is head.bias:
        head.decoder.bias = torch.nn.Parameter(head.bias.detach().clone())


def _write_folder(model, tokenizer, provenance: dict, out_dir: Path) -> Path:
    """Into a temporary folder beside `out_dir`, renamed to it when complete."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        (staging / "reconstruct.json").write_text(json.dumps(provenance, indent=1) + "\n")
        if out_dir.exists():
            out_dir.rmdir()   # empty, checked before any work
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir
