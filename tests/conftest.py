import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_SST2 = REPO_ROOT.parent / "shared" / "data" / "glue" / "SST-2"

# A corpus in which the label words are frequent enough to become single BPE tokens.
MICRO_CORPUS = [
    "a great movie", "a terrible movie", "the plot was great", "the acting was terrible",
    "it was great fun", "it was terrible and dull", "great great film", "terrible terrible film",
    "the film is a great ride", "a terrible mess of a script",
] * 20


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def sst2_dir() -> Path:
    """The real GLUE SST-2 folder: $MEZO_BENCH_DATA_DIR, else ../shared/data/glue/SST-2."""
    path = Path(os.environ.get("MEZO_BENCH_DATA_DIR", SHARED_SST2))
    if not (path / "train.tsv").is_file():
        pytest.skip(f"SST-2 data not found at {path} (set MEZO_BENCH_DATA_DIR to a GLUE SST-2 folder)")
    return path


@pytest.fixture(scope="session")
def micro_tokenizer():
    from harness.modeling import train_bpe_tokenizer

    return train_bpe_tokenizer(MICRO_CORPUS, vocab_size=300)


def build_micro_model(tokenizer, seed=0, dtype=torch.float32):
    from transformers import RobertaConfig, RobertaForMaskedLM

    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                           type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return RobertaForMaskedLM(config).to(dtype).eval()


@pytest.fixture
def micro_model(micro_tokenizer):
    return build_micro_model(micro_tokenizer)
