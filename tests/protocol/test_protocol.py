"""Unit tests: the protocol file, its layering, validation and version lock."""

import json
from pathlib import Path

import pytest

from harness.core.errors import HarnessError
from harness.protocol.loading import load_protocol
from harness.protocol.variants import VARIANTS


@pytest.fixture
def protocol_copy(sst2_protocol, tmp_path):
    """A writable copy of the sst2 protocol under a name of its own, locked beside it."""
    path = tmp_path / "protocol.toml"
    path.write_text(sst2_protocol.read_text().replace('name = "sst2-mezo"', 'name = "sst2-mezo-copy"'))
    load_protocol(path).write_lock()
    return path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_paper_mezo_is_the_published_protocol(sst2_protocol):
    paper = load_protocol(sst2_protocol).run_settings("paper", "hf-mlm")
    assert paper.model == "roberta-large"
    assert paper.k == (16, 512)
    assert paper.seeds == (13, 21, 42, 87, 100)
    assert paper.steps == 100_000 and paper.eval_every == 10_000
    assert paper.batch_size == {16: (64,), 512: (64,)}
    assert paper.lr == (1e-7, 1e-6, 1e-5) and paper.eps == (1e-3,) and paper.weight_decay == (0.0,)
    assert paper.lm_decoder == "untied"        # the reference's LM head has its own decoder
    assert paper.lr_schedule == "constant" and paper.dropout is False
    assert paper.dtype == "float32" and paper.max_length == 128
    assert paper.template == ("<s>", "{sentence}", " It was", "<mask>", ".", "</s>")
    assert paper.label_words == (" terrible", " great")


def test_paper_lora_and_ft_grids_are_table_15(sst2_protocol):
    protocol = load_protocol(sst2_protocol)
    lora = protocol.run_settings("quick", "hf-mlm-lora")          # the method as described
    assert lora.weight_decay == (0.1,) and lora.eps == (1e-3,)
    assert (lora.lora_r, lora.lora_alpha, lora.lora_targets) == (8, 16, ("query", "value"))
    for name in ("hf-mlm-lora-ref", "hf-mlm-lora-ref-merged"):   # as the reference code ran it
        ref = protocol.run_settings("paper", name)
        assert ref.lr == (1e-5, 5e-5, 1e-4) and ref.eps == (1e-3,) and ref.steps == 100_000
        assert ref.weight_decay == (0.0,)     # the May-2023 zeroth-order update ignored weight decay
        assert ref.lm_decoder == "untied"
    assert protocol.run_settings("paper", "hf-mlm-lora-ref").lora_r == 8
    ft = protocol.run_settings("paper", "hf-ft")
    assert ft.lr == (1e-5, 3e-5, 5e-5) and ft.steps == 1000
    assert ft.batch_size == {16: (2, 4, 8), 512: (8, 16, 32)}
    assert ft.lr_schedule == "linear" and ft.dropout is True and ft.max_grad_norm == 1.0
    assert len(ft.grid()) == 2 * 5 * 3 * 3
    assert protocol.run_settings("paper", "hf-mlm-acc").k == (512,)   # Table 3 reports k=512 only


def test_paper_profile_runs_the_table18_methods_whose_settings_we_have(sst2_protocol):
    protocol = load_protocol(sst2_protocol)
    assert set(protocol.profile_variants["paper"]) == {"hf-mlm", "hf-mlm-lora-ref", "hf-mlm-lora-ref-merged",
                                                      "hf-ft", "hf-mlm-acc", "hf-zero-shot", "hf-lp", "hf-lp-mezo",
                                                      "hf-mlm-prefix", "hf-ft-lora", "hf-ft-prefix"}
    # MeZO-Adam's Table 15 grid is not in our sources: not in `paper` (it runs in quick and smoke)
    assert "hf-mlm-adam" in protocol.profile_variants["smoke"]
    prefix = protocol.run_settings("paper", "hf-mlm-prefix")
    assert (prefix.num_prefix, prefix.lr, prefix.eps, prefix.batch_size) == (5, (1e-2, 5e-3, 1e-3), (1e-1,),
                                                                            {16: (64,), 512: (64,)})
    zero_shot = protocol.run_settings("paper", "hf-zero-shot")
    assert len(zero_shot.grid()) == 5 and zero_shot.k == (16,)   # one run per seed
    assert len(protocol.run_settings("paper", "hf-lp").grid()) == 10   # k=16 and 512, five seeds


def test_prompt_ablation_has_its_own_grid_with_eps_and_weight_decay(sst2_protocol):
    protocol = load_protocol(sst2_protocol)
    assert protocol.profile_variants["prompt-ablation"] == ("hf-mlm", "hf-cls")
    for name in ("hf-mlm", "hf-cls"):
        settings = protocol.run_settings("prompt-ablation", name)
        assert settings.batch_size == {16: (16, 64)} and settings.lr == (1e-5, 1e-6, 1e-7)
        assert settings.eps == (1e-3, 1e-5) and settings.weight_decay == (0.0, 0.1)
        assert settings.steps == 5000 and settings.k == (16,)       # 10K forward passes
        grid = settings.grid()
        assert len(grid) == 5 * 2 * 3 * 2 * 2 and len(set(grid)) == len(grid)
        assert {(p.eps, p.weight_decay) for p in grid} == {(1e-3, 0.0), (1e-3, 0.1), (1e-5, 0.0), (1e-5, 0.1)}
    assert protocol.run_settings("prompt-ablation", "hf-cls").template == ("<s>", "{sentence}", "</s>")


def test_layering_defaults_profile_variant_override(sst2_protocol):
    protocol = load_protocol(sst2_protocol)
    assert protocol.run_settings("paper", "hf-ft").steps == 1000            # [variants] beats [profiles]
    assert protocol.run_settings("smoke", "hf-ft").steps == 200             # [profiles.overrides] beats [variants]
    assert protocol.run_settings("smoke", "hf-mlm").steps == 400            # [profiles] beats [defaults]
    assert protocol.run_settings("smoke", "hf-mlm").eval_batch_size == 64   # [defaults]
    assert set(protocol.profile_variants["smoke"]) == set(VARIANTS)


def test_committed_protocol_matches_its_lock(sst2_protocol):
    load_protocol(sst2_protocol).check_lock()


def test_auto_profile_depends_on_device(sst2_protocol):
    protocol = load_protocol(sst2_protocol)
    assert protocol.resolve_profile_name("auto", "cpu") == "standin-main"   # the main job on CPU: real learning on the stand-in
    assert protocol.resolve_profile_name("auto", "cuda") == "quick"


def test_hash_changes_only_for_what_changed(protocol_copy):
    before = load_protocol(protocol_copy).current_hashes()
    assert before == load_protocol(protocol_copy).current_hashes()
    edit(protocol_copy, "[profiles.smoke.overrides.hf-ft]\nlr = [1e-3]", "[profiles.smoke.overrides.hf-ft]\nlr = [2e-3]")
    after = load_protocol(protocol_copy).current_hashes()
    assert {key for key in before if before[key] != after[key]} == {"smoke/hf-ft"}


def test_eps_and_weight_decay_are_grids_in_the_hash(protocol_copy):
    before = load_protocol(protocol_copy).current_hashes()
    edit(protocol_copy, "[profiles.smoke.overrides.hf-mlm-lora]\n",
         "[profiles.smoke.overrides.hf-mlm-lora]\neps = [1e-3, 1e-4]\n")
    after = load_protocol(protocol_copy)
    assert {key for key in before if before[key] != after.current_hashes()[key]} == {"smoke/hf-mlm-lora"}
    assert [p.eps for p in after.run_settings("smoke", "hf-mlm-lora").grid() if p.seed == 13] == [1e-3, 1e-4]


def test_changing_a_value_without_bumping_version_fails_the_lock(protocol_copy):
    edit(protocol_copy, "steps = 400\n", "steps = 401\n")
    with pytest.raises(HarnessError, match=r"smoke/hf-cls, .* differ from what version 3 locked; bump `version`"):
        load_protocol(protocol_copy).check_lock()
    with pytest.raises(HarnessError, match="already locked"):
        load_protocol(protocol_copy).write_lock()
    edit(protocol_copy, "version = 3", "version = 4")
    with pytest.raises(HarnessError, match="version 4 is not locked"):
        load_protocol(protocol_copy).check_lock()
    bumped = load_protocol(protocol_copy)
    bumped.write_lock()
    bumped.check_lock()


def test_adding_a_variant_is_locked_into_the_current_version(protocol_copy):
    edit(protocol_copy, ' "hf-cls-acc",', '')   # as before hf-cls-acc existed
    lock = json.loads((protocol_copy.parent / "protocol.lock.json").read_text())
    lock["3"] = {key: value for key, value in lock["3"].items() if not key.endswith("/hf-cls-acc")}
    (protocol_copy.parent / "protocol.lock.json").write_text(json.dumps(lock))
    load_protocol(protocol_copy).check_lock()
    edit(protocol_copy, '"hf-mlm-acc",', '"hf-mlm-acc", "hf-cls-acc",')
    with pytest.raises(HarnessError, match="quick/hf-cls-acc, smoke/hf-cls-acc are not locked "
                                           "in version 3; run .* --lock` to add them"):
        load_protocol(protocol_copy).check_lock()
    added = load_protocol(protocol_copy)
    added.write_lock()
    added.check_lock()
    locked = json.loads((protocol_copy.parent / "protocol.lock.json").read_text())["3"]
    assert {key: locked[key] for key in lock["3"]} == lock["3"]   # existing hashes untouched


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("steps = 400\n", "stepz = 400\n", r"\[profiles.smoke\]: unknown key 'stepz'; allowed keys: batch_size, dropout, dtype"),
        ("k = [16]\nseeds = [13, 42]", "k = [0]\nseeds = [13, 42]", r"\[profiles.smoke\] variant hf-mlm: field 'k' must be a non-empty list of integers >= 1"),
        ('dtype = "float32"', 'dtype = "fp8"', r"field 'dtype' must be one of \['float32', 'bfloat16', 'float16'\], got 'fp8'"),
        ("eps = 1e-3 ", "eps = -1e-3 ", r"field 'eps' must be a positive number or a non-empty list of distinct ones"),
        ("eps = 1e-3 ", "eps = [1e-3, 1e-3] ", r"field 'eps' must be a positive number or a non-empty list"),
        ("weight_decay = 0.0 ", "weight_decay = [] ", r"field 'weight_decay' must be a number >= 0 or a non-empty list"),
        ('lm_decoder = "untied"', 'lm_decoder = "shared"', r"field 'lm_decoder' must be one of \['tied', 'untied'\]"),
        ('lm_decoder = "tied"    # SGLang', 'lm_decoder = "untied"    # SGLang',
         r"quick\] variant sglang-mlm: field 'lm_decoder' must be \"tied\" for the SGLang backend"),
        ('[profiles.smoke.overrides.hf-mlm-lora-ref-merged]\nlr = [1e-3]\nlm_decoder = "untied"',
         '[profiles.smoke.overrides.hf-mlm-lora-ref-merged]\nlr = [1e-3]\nlm_decoder = "tied"',
         r"variant hf-mlm-lora-ref-merged: field 'lm_decoder' must be \"untied\""),
        ("max_grad_norm = 1.0", "max_grad_norm = 0", r"field 'max_grad_norm' must be a positive number, got 0"),
        ("[variants.hf-cls]\n", "[variants.hf-cls]\nmax_grad_norm = 1.0\n",
         r"variant hf-cls: field 'max_grad_norm' applies to first-order variants only"),
        ("max_grad_norm = 1.0", "max_grad_norm = 1.0\neps = [1e-3, 1e-5]",
         r"variant hf-ft: field 'eps' is a grid for zeroth-order variants only"),
        ("steps = 400\neval_every = 100\n", "steps = 400\neval_every = 1000\n", r"field 'eval_every' must be <= steps \(400\)"),
        ('"random-init:tiny"', '"random-init:huge"', r"random-init config must be one of"),
        ('variants = ["hf-mlm", ', 'variants = ["hf-nope", ', r"field 'variants' must be a non-empty list of known variants"),
        ('label_words = [" terrible", " great"]', 'label_words = [" terrible", " ok", " great"]', r"field 'label_words' needs 2 words for this task"),
        ('"<mask>", ".", "</s>"]', '".", "</s>"]', r"variant hf-mlm: field 'template' must contain '<mask>' exactly once for a masked-LM variant"),
        ('template = ["<s>", "{sentence}", "</s>"]   # no prompt', 'template = ["<s>", "{sentence}", "<mask>", "</s>"]   # no prompt', r"variant hf-cls: field 'template' must not contain '<mask>'"),
        ("lora_r = 8\n", "", r"variant hf-mlm-lora: field 'lora_r' must be set for a LoRA variant"),
        ("batch_size = { 16 = [2, 4, 8], 512 = [8, 16, 32] }", "batch_size = { 512 = [8, 16, 32] }", r"field 'batch_size \(k=16\)' must be a non-empty list of integers >= 1"),
        ('lr_schedule = "linear"', 'lr_schedule = "cosine"', r"field 'lr_schedule' must be one of \['constant', 'linear'\]"),
        ("dropout = true", "dropout = 1", r"field 'dropout' must be true or false"),
        ('cpu = "standin-main"', 'cpu = "tiny"', r"field 'cpu' must name a profile"),
        ('task = "sst2"', 'task = "sst9"', r"field 'task' must be one of \['mnli', 'rte', 'snli', 'sst2', 'sst5', 'trec'\], got 'sst9'"),
        ("lr = [1e-3]\nsteps = 400", 'lr = ["fast"]\nsteps = 400', r"field 'lr' must be a non-empty list of positive numbers"),
        ("[profiles.smoke.overrides.hf-ft]", "[profiles.smoke.overrides.hf-zz]", r"overrides.hf-zz is for a variant the profile does not run"),
        ("[variants.hf-cls]", "[variants.hf-zz]", r"\[variants.hf-zz\]: unknown variant"),
        ("[variants.hf-ft]\n", "[variants.hf-ft]\nvariants = []\n", r"\[variants.hf-ft\]: unknown key 'variants'"),
        ("length_buckets = 1\n", "length_buckets = 0\n", r"field 'length_buckets' must be an integer in \[1, 64\], got 0"),
        ("[variants.hf-ft]\n", "[variants.hf-ft]\nlength_buckets = 4\n",
         r"variant hf-ft: field 'length_buckets' applies to MeZO \(SGD\) variants only"),
        ("num_prefix = 5\nlr = [1e-2, 5e-3, 1e-3]", "lr = [1e-2, 5e-3, 1e-3]",
         r"variant hf-mlm-prefix: field 'num_prefix' must be set for a prefix variant and only for one, got None"),
        ("num_prefix = 5\nlr = [1e-2, 5e-3, 1e-3]", "num_prefix = 0\nlr = [1e-2, 5e-3, 1e-3]",
         r"field 'num_prefix' must be an integer >= 1"),
        ('eval_every = 1\nlm_decoder = "untied"', 'eval_every = 1\nlm_decoder = "tied"',
         r"variant hf-lp: field 'lm_decoder' must be \"untied\" for 'hf-lp': linear probing writes"),
        ("k = [16]\nlr = [1e-6]", "k = [16]\nlr = [1e-6, 1e-5]",
         r"variant hf-zero-shot: field 'lr' must be one value for 'hf-zero-shot': it trains nothing"),
    ],
)
def test_bad_values_name_the_field(protocol_copy, old, new, message):
    edit(protocol_copy, old, new)
    with pytest.raises(HarnessError, match=message):
        load_protocol(protocol_copy)


def test_unknown_profile_and_variant_list_the_known_ones(sst2_protocol):
    protocol = load_protocol(sst2_protocol)
    with pytest.raises(HarnessError, match=r"unknown profile 'fast' .* profiles: paper, prompt-ablation, quick, smoke"):
        protocol.run_settings("fast", "hf-mlm")
    with pytest.raises(HarnessError, match=r"variant 'hf-x' is not part of profile 'smoke'"):
        protocol.run_settings("smoke", "hf-x")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(HarnessError, match="protocol file not found"):
        load_protocol(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(HarnessError, match="not valid TOML"):
        load_protocol(bad)


def test_checkpoint_intervals_come_from_the_protocol_and_are_validated(sst2_protocol, tmp_path):
    from harness.protocol.settings import CheckpointPolicy

    protocol = load_protocol(sst2_protocol)
    assert protocol.checkpoints == CheckpointPolicy(every=1000, every_seconds=600, snapshot_every=10_000)
    copy = tmp_path / "protocol.toml"
    copy.write_text(sst2_protocol.read_text().replace("every = 1000 ", "every = 0 "))
    with pytest.raises(HarnessError, match=r"\[checkpoints\]: field 'checkpoints.every' must be an integer >= 1"):
        load_protocol(copy)
    copy.write_text(sst2_protocol.read_text().replace("[checkpoints]\n", "[checkpoints]\nevery_minute = 1\n"))
    with pytest.raises(HarnessError, match=r"\[checkpoints\]: unknown key 'every_minute'"):
        load_protocol(copy)
    # intervals change no result: the settings hashes (and so the lock) ignore them
    copy.write_text(sst2_protocol.read_text().replace("every = 1000 ", "every = 7 "))
    assert load_protocol(copy).current_hashes() == protocol.current_hashes()
