"""RadixAttention (SGLang's prefix cache) under MeZO, measured rather than assumed.

A MeZO step runs the same batch twice, at theta + eps*z and theta - eps*z. A prefix cache
would serve the second pass's tokens from the first pass's keys/values. Three measurements:

(a) `simulated`: the token-level prefix hits a standalone `RadixCache` (no model, page size 1)
    reports -- per step with an empty cache at the step's start (+eps pass inserted, -eps
    pass matched; `prefix_hit_rate` is over both passes' tokens), -eps pass alone, and across
    the training examples of one pass (what the shared template contributes).
(b) `valid_reuse`: whether reuse would be *correct*: the fraction of tokens whose keys and
    values, at every layer, are bitwise identical in the two passes (captured from SGLang's
    QKV projections). Only such tokens can be served from a cache without changing outputs.
    `token_reuse_rate` is this fraction.
(c) `prefix_cache`: SGLang's own prefix cache switched on for this model (a RadixCache over
    the runner's KV pool, requests matched and cached as the scheduler does) vs off, over
    the same MeZO steps: max logit error against the cache-off outputs, accuracy change,
    time and peak memory -- or the error it raises.
"""

from __future__ import annotations

import traceback
from array import array

import torch
import torch.nn.functional as F

from harness.backends.base import cpu_state_copy
from harness.backends.sglang.runner import SGLangMaskedLM, ragged_sequences
from harness.measure.memory import PeakMeter
from harness.measure.throughput import Clock
from harness.tasks.batching import Batch
from harness.zo.mezo import MeZO


def simulated_hits(step_batches: list[list[list[int]]], train_sequences: list[list[int]]) -> dict:
    """(a): what a radix cache would report, from token ids alone."""
    from sglang.srt.mem_cache.base_prefix_cache import InsertParams, MatchPrefixParams
    from sglang.srt.mem_cache.radix_cache import RadixCache, RadixKey

    def match_then_insert(cache, sequence: list[int]) -> int:
        key = RadixKey(token_ids=array("q", sequence))
        hit = cache.match_prefix(MatchPrefixParams(key=key)).device_prefix_len
        cache.insert(InsertParams(key=key, value=torch.arange(len(sequence))))
        return int(hit)

    step_hits = minus_hits = step_tokens = minus_tokens = 0
    for sequences in step_batches:
        cache = RadixCache.create_simulated(page_size=1)
        tokens = sum(len(s) for s in sequences)
        plus = sum(match_then_insert(cache, s) for s in sequences)     # +eps pass
        minus = sum(match_then_insert(cache, s) for s in sequences)    # -eps pass, same tokens
        step_hits += plus + minus
        minus_hits += minus
        step_tokens += 2 * tokens
        minus_tokens += tokens
    shared = RadixCache.create_simulated(page_size=1)
    across = sum(match_then_insert(shared, s) for s in train_sequences)
    return {
        "prefix_hit_rate": step_hits / step_tokens,
        "minus_pass_hit_rate": minus_hits / minus_tokens,
        "across_examples_hit_rate": across / sum(len(s) for s in train_sequences),
        "steps": len(step_batches),
        "method": "standalone RadixCache(page_size=1), empty at each step's start; "
                  "across examples: one pass over the training examples, matched then inserted in turn",
    }


def _capture_keys_values(model: SGLangMaskedLM, sequences: list[list[int]]) -> list[torch.Tensor]:
    """Per layer, the [tokens, 2 * hidden] keys and values SGLang computes for `sequences`."""
    captured, hooks = [], []
    for layer in model.sglang_model.roberta.encoder.layer:
        attention = layer.attention.self_attn

        def keep(_module, _inputs, output, q_size=attention.q_size):
            captured.append(output[0][:, q_size:].detach().clone())

        hooks.append(attention.qkv_proj.register_forward_hook(keep))
    try:
        model.forward_tokens(sequences)
    finally:
        for hook in hooks:
            hook.remove()
    return captured


def valid_reuse(model: SGLangMaskedLM, step_batches: list[list[list[int]]], engine: MeZO, seeds: list[int]) -> dict:
    """(b): tokens whose KV is identical at +eps and -eps (at every layer)."""
    identical = total = 0
    for sequences, seed in zip(step_batches, seeds):
        engine.perturb(seed, +engine.eps)
        plus = _capture_keys_values(model, sequences)
        engine.perturb(seed, -2.0 * engine.eps)
        minus = _capture_keys_values(model, sequences)
        engine.perturb(seed, +engine.eps)   # back to theta
        same = torch.ones(plus[0].shape[0], dtype=torch.bool, device=plus[0].device)
        for kv_plus, kv_minus in zip(plus, minus):
            same &= (kv_plus == kv_minus).all(dim=1)
        identical += int(same.sum())
        total += same.numel()
    return {"token_reuse_rate": identical / total, "tokens": total,
            "method": "tokens whose keys and values are bitwise equal in the +eps and -eps passes at every layer"}


def _mezo_steps(model: SGLangMaskedLM, step_batches, labels, engine: MeZO, seeds, tree_cache,
                progress: dict) -> dict:
    """MeZO steps' forward passes, with or without a prefix cache: logits, time, peak memory.
    `progress` counts the passes done and the prefix-cache hits, also when a pass fails."""
    logits = []
    progress.update(passes_completed=0, prefix_hit_tokens=0, tokens=0)

    def forward(sequences):
        try:
            return model.forward_tokens(sequences, tree_cache=tree_cache).float()
        finally:
            progress["prefix_hit_tokens"] += model.last_prefix_hit_tokens
            progress["tokens"] += sum(len(s) for s in sequences)
    clock = Clock(model.device)
    with PeakMeter(model.device) as meter:
        started = clock.now()
        for sequences, target, seed in zip(step_batches, labels, seeds):
            engine.perturb(seed, +engine.eps)
            plus = forward(sequences)
            progress["passes_completed"] += 1
            engine.perturb(seed, -2.0 * engine.eps)
            minus = forward(sequences)
            progress["passes_completed"] += 1
            projected_grad = float(F.cross_entropy(plus, target) - F.cross_entropy(minus, target)) / (2 * engine.eps)
            engine.restore_and_update(seed, projected_grad)
            logits += [plus, minus]
        seconds = clock.now() - started
    return {"logits": logits, "seconds": seconds, "steps_per_second": len(step_batches) / seconds,
            "peak_bytes": meter.peak_bytes, "excess_bytes": meter.excess_bytes}


def prefix_cache_on_vs_off(model: SGLangMaskedLM, batches: list[Batch], engine: MeZO, seeds: list[int]) -> dict:
    """(c): the same MeZO steps through SGLang with its prefix cache off, then on."""
    from sglang.srt.mem_cache.cache_init_params import CacheInitParams
    from sglang.srt.mem_cache.radix_cache import RadixCache

    step_batches = [ragged_sequences(batch) for batch in batches]
    labels = [batch.labels for batch in batches]
    start = cpu_state_copy(model)
    off = _mezo_steps(model, step_batches, labels, engine, seeds, tree_cache=None, progress={})
    model.load_state_dict(start)
    runner = model.runner
    cache = RadixCache(CacheInitParams(disable=False, req_to_token_pool=runner.req_to_token_pool,
                                       token_to_kv_pool_allocator=runner.token_to_kv_pool_allocator, page_size=1))
    kept = ("seconds", "steps_per_second", "peak_bytes", "excess_bytes")
    result = {"off": {k: off[k] for k in kept}}
    progress = {}
    try:
        on = _mezo_steps(model, step_batches, labels, engine, seeds, tree_cache=cache, progress=progress)
    except Exception as error:   # the measurement *is* whether and how it fails
        frame = traceback.extract_tb(error.__traceback__)[-1]
        result["on"] = {"error": f"{type(error).__name__}: {error}".rstrip(": "),
                        "raised_at": f"{frame.filename.split('site-packages/')[-1]}:{frame.lineno}",
                        "source_line": frame.line, **progress}
    else:
        errors = [float((a - b).abs().max()) for a, b in zip(on["logits"], off["logits"])]
        flips = [float((a.argmax(-1) != b.argmax(-1)).float().mean()) for a, b in zip(on["logits"], off["logits"])]
        result["on"] = {**{k: on[k] for k in kept}, **progress}
        result["on"].update(max_abs_logit_error=max(errors), prediction_flip_rate=sum(flips) / len(flips))
        result["memory_saved_fraction"] = 1.0 - on["peak_bytes"] / off["peak_bytes"]
    finally:
        runner.req_to_token_pool.clear()
        runner.token_to_kv_pool_allocator.clear()
        model.load_state_dict(start)
    result["steps"] = len(step_batches)
    return result


def measure_radix(model: SGLangMaskedLM, step_batches: list[Batch], train_sequences: list[list[int]], *,
                  eps: float, seed: int) -> dict:
    """(a), (b) and (c) over the given steps' batches; the model's weights are left unchanged."""
    seeds = [seed + index for index in range(len(step_batches))]
    ragged = [ragged_sequences(batch) for batch in step_batches]
    start = cpu_state_copy(model)
    engine = MeZO(list(model.named_parameters()), lr=0.0, eps=eps, weight_decay=0.0)
    try:
        simulated = simulated_hits(ragged, train_sequences)
        reuse = valid_reuse(model, ragged, engine, seeds)
        cache = prefix_cache_on_vs_off(model, step_batches, engine, seeds)
    finally:
        engine.close()
        model.load_state_dict(start)   # +eps/-eps round trips are exact only up to rounding
    radix = {"prefix_hit_rate": simulated["prefix_hit_rate"], "token_reuse_rate": reuse["token_reuse_rate"],
             "simulated": simulated, "valid_reuse": reuse, "prefix_cache": cache}
    if "memory_saved_fraction" in cache:
        radix["memory_saved_fraction"] = cache["memory_saved_fraction"]
    return radix
