"""The SGLang backend (optional: `pip install 'mezo-bench[sglang]'`).

Nothing here is imported by the rest of the harness until an `sglang-*` variant runs:
`backend` imports SGLang only inside its methods, `model` and `runner` at module level. Its
RadixAttention measurement is harness.measure.radix.
"""
