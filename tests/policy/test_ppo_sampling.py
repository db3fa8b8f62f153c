"""PPO's rollouts sample from exactly the distribution its ratio scores, whatever the checkpoint's generation_config
says (Qwen2.5-Instruct ships repetition_penalty 1.05: sampled with it, scored without it, every ratio is biased)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from pipeline.hf_utils import load_tokenizer
from policy.ppo import ActorCritic, HFRollout, PPOConfig, response_mask, chat_ids, response_logprobs


def test_sampled_log_probs_are_the_old_log_probs_despite_the_models_generation_config(tiny_lm_dir: Path,
                                                                                      tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model_dir = tmp_path / "penalised"
    shutil.copytree(tiny_lm_dir, model_dir)
    settings = json.loads((model_dir / "generation_config.json").read_text())
    settings.update(repetition_penalty=3.0, no_repeat_ngram_size=2, top_k=5, min_new_tokens=8)
    (model_dir / "generation_config.json").write_text(json.dumps(settings))
    config = PPOConfig(response_length=16, temperature=0.7)
    tokenizer = load_tokenizer(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert model.generation_config.repetition_penalty == 3.0
    prompts = [[{"role": "user", "content": text}] for text in ("hello there", "say it again and again", "hi")]
    batch = tokenizer.pad({"input_ids": [chat_ids(tokenizer.apply_chat_template(p, add_generation_prompt=True))
                                         for p in prompts]}, return_tensors="pt")

    generate, seen = model.generate, []

    def recording(**kwargs):  # noqa: ANN003, ANN202 - the scores generate sampled from, beside the tokens
        out = generate(**kwargs, output_scores=True, return_dict_in_generate=True)
        seen.append(out)
        return out.sequences

    model.generate = recording
    torch.manual_seed(0)
    sequences = HFRollout(tokenizer, config).generate(model, batch)
    assert model.generation_config.repetition_penalty == 3.0  # the model's own config is left as it was
    prompt_length = batch["input_ids"].shape[1]
    responses = sequences[:, prompt_length:]
    sampled = torch.gather(torch.stack(seen[0].scores, 1).float().log_softmax(-1), 2,
                           responses.unsqueeze(-1)).squeeze(-1)
    mask, _ = response_mask(responses, tokenizer.eos_token_id)
    attention = torch.cat([batch["attention_mask"], mask.long()], dim=1)
    with torch.no_grad():
        logits, _ = ActorCritic(model)(sequences, attention)
    old_logprobs = response_logprobs(logits, responses, prompt_length, config.temperature)
    difference = ((sampled - old_logprobs) * mask).abs().max().item()
    assert difference < 1e-4, f"sampled and scored log-probs differ by {difference:.4f}"
