"""SGLang's in-process ModelRunner serving `RobertaForMaskedLM`, seen by the harness with
Hugging Face parameter names.

The bootstrap is the one `python -m sglang.benchmark.one_batch` uses (world size 1): server
args -> scheduler role -> parallel runtime (gloo on CPU) -> ModelRunner -> memory pools ->
attention backends. `torch_native` attention on CPU, SGLang's default backend on CUDA; an
embedding model (`--is-embedding`), no CUDA graphs, the prefix cache off (only
harness.measure.radix puts a RadixCache over the runner's KV pool, to measure it).
Weights are not read from disk by SGLang: the runner starts with dummy weights and the
Hugging Face model's state dict is loaded into it, so both backends hold the same numbers
from whatever `load_model` loaded (hub id, local path or random-init config).

Batches go in ragged: each example's real tokens only, packed one after another (an
"extend" batch), never padded.

The protocol's parameters are the Hugging Face ones. SGLang fuses query/key/value into one
`qkv_proj` tensor and pads the word-embedding rows to a multiple of 64; `named_parameters`
returns views into SGLang's tensors under the Hugging Face names, in Hugging Face's order
and shapes, so the MeZO engine draws exactly the same z for each canonical parameter on both
backends and its in-place updates land in the runner's weights.

SGLang allows one ModelRunner per process; `SGLangMaskedLM.build` reuses it when the next
model has the same architecture (new weights are loaded into it).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from array import array
from pathlib import Path

import torch

from harness.core.errors import HarnessError
from harness.tasks.batching import Batch

ARCHITECTURE = "RobertaForMaskedLM"
_QKV_NAME = re.compile(r"^(roberta\.encoder\.layer\.\d+\.attention)\.self\.(query|key|value)\.(weight|bias)$")
_QKV_SHARDS = {"query": 0, "key": 1, "value": 2}
_WORD_EMBEDDINGS = "roberta.embeddings.word_embeddings.weight"

_RUNNER = None   # (key, ModelRunner): SGLang's process-wide runtime admits one runner


def sglang_parameter_view(sglang_parameters: dict[str, torch.Tensor], hf_name: str, vocab_size: int) -> torch.Tensor:
    """The slice of SGLang's tensor that holds Hugging Face parameter `hf_name`."""
    fused = _QKV_NAME.match(hf_name)
    if fused:
        prefix, projection, kind = fused.groups()
        tensor = sglang_parameters[f"{prefix}.self_attn.qkv_proj.{kind}"]
        size = tensor.shape[0] // 3   # world size 1: [q; k; v], each hidden_size rows
        start = _QKV_SHARDS[projection] * size
        return tensor[start:start + size]
    if hf_name == _WORD_EMBEDDINGS:
        return sglang_parameters[hf_name][:vocab_size]
    return sglang_parameters[hf_name]


def write_sglang_config(hf_config, folder: Path) -> Path:
    """config.json for SGLang: our architecture, and position_embedding_type, which
    transformers 5 no longer writes but SGLang's RoBERTa layers read."""
    values = hf_config.to_dict()
    values["architectures"] = [ARCHITECTURE]
    values["position_embedding_type"] = "absolute"
    values.pop("torch_dtype", None)
    values.pop("dtype", None)
    (folder / "config.json").write_text(json.dumps(values, indent=2))
    return folder


def register_model() -> None:
    from sglang.srt.models.registry import ModelRegistry

    from harness.backends.sglang.model import RobertaForMaskedLM

    ModelRegistry.models[ARCHITECTURE] = RobertaForMaskedLM


def _start_model_runner(model_dir: Path, device: torch.device, dtype: str, max_total_tokens: int,
                        max_requests: int):
    from sglang.benchmark.one_batch import _init_process_global_configs
    from sglang.srt.arg_groups.overrides import resolving_view
    from sglang.srt.configs.model_config import ModelConfig
    from sglang.srt.distributed import bootstrap
    from sglang.srt.entrypoints.engine import _set_envs_and_config
    from sglang.srt.model_executor.model_runner import ModelRunner
    from sglang.srt.runtime_context import (
        SpawnRanks,
        get_device,
        publish,
        spawn_world_rank,
    )
    from sglang.srt.server_args import PortArgs, ServerArgs

    register_model()
    cpu = device.type == "cpu"
    server_args = ServerArgs(
        model_path=str(model_dir), device=device.type, dtype=dtype, is_embedding=True, load_format="dummy",
        skip_tokenizer_init=True, disable_cuda_graph=True, disable_radix_cache=True,
        attention_backend="torch_native" if cpu else None,
        mem_fraction_static=0.05 if cpu else 0.5, max_total_tokens=max_total_tokens,
        max_running_requests=max_requests, chunked_prefill_size=-1, log_level="error")
    server_args.resolve_once()
    _set_envs_and_config(server_args)
    port_args = PortArgs.init_new(server_args)
    publish(server_args, role="scheduler",
            ranks=SpawnRanks(world_rank=spawn_world_rank(server_args, tp_rank=0, pp_rank=0), gpu_id=0))
    _init_process_global_configs()
    model_config = ModelConfig.from_server_args(server_args)
    bootstrap.init_parallel_runtime(server_args=server_args, device=get_device().device,
                                    dist_port=port_args.nccl_port)
    bootstrap.init_layer_runtime(model_config=model_config)
    runner = ModelRunner(model_config=model_config, mem_fraction_static=resolving_view(server_args).mem_fraction_static,
                         gpu_id=0, nccl_port=port_args.nccl_port, server_args=server_args)
    runner.alloc_memory_pool()
    runner.init_attention_backends()
    runner.init_cuda_graphs()   # disabled: installs the eager runner that forward() expects
    return runner


def model_runner_for(hf_config, device: torch.device, dtype: str, max_total_tokens: int, max_requests: int):
    """The process's ModelRunner for this architecture, started on first use."""
    global _RUNNER
    architecture = {k: v for k, v in hf_config.to_dict().items() if k not in ("_name_or_path", "transformers_version")}
    key = json.dumps([architecture, str(device), dtype, max_total_tokens, max_requests], sort_keys=True, default=str)
    if _RUNNER is not None:
        if _RUNNER[0] != key:
            raise HarnessError("SGLang allows one ModelRunner per process and this process already runs "
                               "another model configuration; run each sglang model in its own process")
        return _RUNNER[1]
    for name in ("sglang", "sglang.srt"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="mezo-bench-sglang-") as folder:
        runner = _start_model_runner(write_sglang_config(hf_config, Path(folder)), device, dtype,
                                     max_total_tokens, max_requests)
    _RUNNER = (key, runner)
    return runner


class SGLangMaskedLM:
    """The harness's view of an SGLang-served masked LM: Hugging Face names, state dicts, and
    label-word logits from ragged batches. Duck-types the parts of a transformers model the
    harness uses (config, named_parameters, state_dict, load_state_dict, eval/train)."""

    def __init__(self, runner, hf_model, mask_token_id: int):
        self.runner = runner
        self.config = hf_model.config
        self.device = next(hf_model.parameters()).device
        self.sglang_model = runner.model
        self.sglang_model.load_weights((name, tensor.detach()) for name, tensor in hf_model.state_dict().items())
        self.sglang_model.configure_output(mask_token_id, None)
        sglang_parameters = dict(self.sglang_model.named_parameters())
        vocab = self.config.vocab_size
        # Detached views: leaves that share SGLang's storage; requires_grad marks them trainable
        # for the harness (MeZO only ever changes them in place under no_grad).
        self._parameters = [(name, sglang_parameter_view(sglang_parameters, name, vocab).detach().requires_grad_(True))
                            for name, _ in hf_model.named_parameters()]
        for (name, view), (_, original) in zip(self._parameters, hf_model.named_parameters()):
            if view.shape != original.shape or not torch.equal(view, original.detach()):
                raise HarnessError(f"SGLang parameter layout: {name} does not map onto the loaded weights")
        server_args = runner.server_args
        self.info = {"name": "sglang", "architecture": ARCHITECTURE,
                     "attention_backend": getattr(runner, "attention_backend_name", None)
                     or server_args.attention_backend or "default",
                     "prefix_cache": "off (the radix measurement switches it on separately)",
                     "batches": "ragged extend batches, no padding",
                     "kv_pool_tokens": runner.max_total_num_tokens}

    @classmethod
    def build(cls, hf_model, *, dtype: str, mask_token_id: int, max_total_tokens: int,
              max_requests: int) -> SGLangMaskedLM:
        device = next(hf_model.parameters()).device
        runner = model_runner_for(hf_model.config, device, dtype, max_total_tokens, max_requests)
        return cls(runner, hf_model, mask_token_id)

    # --- the model interface the harness uses -----------------------------------------------
    def named_parameters(self):
        return iter(self._parameters)

    def parameters(self):
        return (param for _, param in self._parameters)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self._parameters)

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = [name for name, _ in self._parameters if name not in state]
        if missing:
            raise KeyError(f"state dict lacks {missing[:3]}")
        for name, param in self._parameters:
            param.copy_(state[name])

    def eval(self):
        return self   # SGLang's layers have no dropout

    def train(self, mode: bool = True):
        if mode:
            raise HarnessError("the SGLang backend runs inference only (no dropout, no backprop)")
        return self

    # --- forward ----------------------------------------------------------------------------
    def set_output_tokens(self, output_token_ids: list[int] | None) -> None:
        """Compute logits for these vocabulary entries only (None: all of them)."""
        self.sglang_model.configure_output(self.sglang_model.mask_token_id, output_token_ids)

    def forward_tokens(self, sequences: list[list[int]], tree_cache=None) -> torch.Tensor:
        """Logits at each sequence's <mask>, one ragged extend batch; the KV slots are freed
        afterwards unless a prefix cache (`tree_cache`, a RadixCache) keeps them."""
        from sglang.srt.managers.schedule_batch import Req, ScheduleBatch
        from sglang.srt.model_executor.forward_batch_info import ForwardBatch
        from sglang.srt.sampling.sampling_params import SamplingParams
        from sglang.srt.speculative.spec_info import SpeculativeAlgorithm

        runner = self.runner
        requests = []
        for index, tokens in enumerate(sequences):
            request = Req(rid=str(index), origin_input_text="", origin_input_ids=array("q", tokens),
                          sampling_params=SamplingParams(max_new_tokens=0))
            request.full_untruncated_fill_ids = request.origin_input_ids
            request.logprob_start_len = -1
            request.extend_end = len(tokens)
            if tree_cache is not None:
                request.init_next_round_input(tree_cache)   # matches the cached prefix, as the scheduler does
            requests.append(request)
        self.last_prefix_hit_tokens = sum(request.prefix_len for request in requests)
        batch = ScheduleBatch.init_new(
            reqs=requests, req_to_token_pool=runner.req_to_token_pool,
            token_to_kv_pool_allocator=runner.token_to_kv_pool_allocator,
            tree_cache=tree_cache if tree_cache is not None else _no_prefix_cache(runner),
            model_config=runner.model_config, enable_overlap=False, spec_algorithm=SpeculativeAlgorithm.NONE)
        batch.prepare_for_extend()
        if batch.input_ids is None and getattr(batch, "prefill_input_ids_cpu", None) is not None:
            batch.input_ids = batch.prefill_input_ids_cpu.to(batch.device)
            batch.prefill_input_ids_cpu = None
        forward_batch = ForwardBatch.init_new(batch, runner, return_hidden_states_before_norm=False)
        try:
            logits = runner.forward(forward_batch).logits_output.embeddings
        finally:
            if tree_cache is None:
                runner.req_to_token_pool.clear()
                runner.token_to_kv_pool_allocator.clear()
            else:
                for request in requests:
                    tree_cache.checkpoint(request, up_to=len(request.origin_input_ids))
        return logits

    def label_word_logits(self, batch: Batch) -> torch.Tensor:
        return self.forward_tokens(ragged_sequences(batch)).float()


def _no_prefix_cache(runner):
    """The stand-in SGLang's one-batch benchmark gives ScheduleBatch when nothing is cached."""
    from sglang.benchmark.one_batch import TreeCacheNamespace
    from sglang.srt.runtime_context import get_schedule

    return TreeCacheNamespace(page_size=get_schedule().page_size, device=runner.device,
                              token_to_kv_pool_allocator=runner.token_to_kv_pool_allocator)


def ragged_sequences(batch: Batch) -> list[list[int]]:
    """Each example's real tokens (padding dropped)."""
    lengths = batch.attention_mask.sum(dim=1).tolist()
    return [row[:length] for row, length in zip(batch.input_ids.tolist(), lengths)]


class SGLangLabelWordHead:
    """Label-word logits at <mask> from the SGLang runner (the `mlm` head on this backend)."""

    def __init__(self, model: SGLangMaskedLM, label_token_ids: list[int]):
        self.model = model
        model.set_output_tokens(label_token_ids)

    def __call__(self, batch: Batch) -> torch.Tensor:
        return self.model.label_word_logits(batch)
