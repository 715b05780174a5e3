"""The SGLang backend (optional: `pip install 'mezo-bench[sglang]'`).

Nothing here is imported by the rest of the harness until an `sglang-*` variant runs:
`model` and `runner` import SGLang at module level, `radix` only when it measures.
"""
