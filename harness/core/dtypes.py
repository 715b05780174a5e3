"""The parameter dtypes a protocol may name. Names only (this layer never imports torch): the
Hugging Face backend maps a name to its torch dtype (harness.backends.hf.torch_dtype), and a
name is also torch's attribute for it (`torch.bfloat16`)."""

DTYPE_NAMES = ("float32", "bfloat16", "float16")
