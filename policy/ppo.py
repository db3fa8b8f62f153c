"""PPO for language models against a reward model, readable top to bottom (CleanRL is the model of clarity).

One update:
1. **Rollout**: sample ``prompts_per_rollout`` prompts, generate a response to each with the current policy.
2. **Score**: the reward model scores (prompt, response); optionally whitened across the batch.
3. **Old values**: log-probs of the response tokens under the policy and under the frozen reference, and the value
   head's estimates, all without gradients.
4. **Rewards per token**: ``-kl_coef * (log p - log p_ref)`` at every token, plus the score at the last one.
5. **Advantages**: generalised advantage estimation (gamma, lambda) over the response tokens, then whitened.
6. **Optimise**: ``ppo_epochs`` passes over mini-batches: clipped policy loss + ``vf_coef`` x clipped value loss.
7. **KL control**: a fixed coefficient, or the adaptive controller of Ziegler et al. (2019).

The policy and the value head share the transformer (a linear head on the last hidden state). Everything runs through
``accelerate``: the same code on one CPU with a tiny model and on several GPUs (DDP, DeepSpeed ZeRO-2/3) with
``accelerate launch --config_file policy/accelerate_configs/<config>.yaml`` (each process samples its own prompts).
The pieces are pure functions on tensors, unit-tested in tests/policy/test_ppo_math.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.errors import UserError
from pipeline.hf_utils import load_tokenizer, require_cuda_for_vllm
from pipeline.llm.identity import folder_fingerprint


def opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


TARGET_KL, KL_HORIZON = 6.0, 10000  # the adaptive controller's defaults (Ziegler et al. 2019)


@dataclass
class PPOConfig:
    learning_rate: float = opt(1e-5, "Adam learning rate (policy and value head)")
    updates: int = opt(100, "rollout + optimisation iterations")
    prompts_per_rollout: int = opt(16, "prompts sampled per update and process")
    mini_batch_size: int = opt(4, "sequences per gradient step")
    ppo_epochs: int = opt(4, "passes over each rollout")
    response_length: int = opt(48, "maximum new tokens per response")
    temperature: float = opt(1.0, "sampling temperature (log-probs use the same)")
    kl_coef: float = opt(0.05, "initial KL penalty coefficient")
    adaptive_kl: bool = opt(False, "adapt kl_coef towards target_kl (Ziegler et al.)")
    target_kl: float | None = opt(None, f"adaptive KL: target KL per sequence (nats; {TARGET_KL} when not set); "
                                        "only with adaptive_kl")
    kl_horizon: int | None = opt(None, f"adaptive KL: horizon in sequences ({KL_HORIZON} when not set); "
                                       "only with adaptive_kl")
    gamma: float = opt(1.0, "discount")
    lam: float = opt(0.95, "GAE lambda")
    cliprange: float = opt(0.2, "policy ratio clip")
    cliprange_value: float = opt(0.2, "value clip")
    vf_coef: float = opt(0.1, "value loss weight")
    whiten_rewards: bool = opt(False, "whiten the scores across each rollout")
    missing_eos_penalty: float | None = opt(None, "subtract this from the score of responses cut before EOS")
    rm_uncertainty_penalty: float = opt(0.0, "ensemble reward models: score = mean - this x std over the members")
    max_grad_norm: float = opt(1.0, "gradient clipping")
    max_prompt_length: int = opt(256, "prompt tokens kept (from the end)")
    save_every: int = opt(25, "updates between checkpoints (and at the end)")
    seed: int = opt(0, "random seed")
    rollout: str = opt("hf", "rollout engine: hf (transformers generate) or vllm (in-process vLLM on the GPU, "
                             "weights pushed after every update)")
    vllm_gpu_memory_utilization: float = opt(0.3, "vllm rollouts: share of the GPU memory vLLM may take")

    def validate(self) -> PPOConfig:
        if self.prompts_per_rollout % self.mini_batch_size:
            raise UserError("prompts_per_rollout must be a multiple of mini_batch_size")
        if self.rollout not in ("hf", "vllm"):
            raise UserError(f"rollout must be hf or vllm, got {self.rollout!r}")
        if min(self.updates, self.ppo_epochs, self.response_length, self.mini_batch_size) < 1:
            raise UserError("updates, ppo_epochs, response_length and mini_batch_size must be >= 1")
        if self.rm_uncertainty_penalty < 0:
            raise UserError("rm_uncertainty_penalty must be >= 0")
        steering = [name for name in ("target_kl", "kl_horizon") if getattr(self, name) is not None]
        if steering and not self.adaptive_kl:  # it was silently ignored: the run kept kl_coef throughout
            raise UserError(f"{' and '.join(steering)} only steer the adaptive KL controller, which is off: turn it on "
                            f"(--adaptive-kl, adaptive_kl = true) or leave {' and '.join(steering)} out (the KL "
                            "coefficient then stays at kl_coef)")
        if (self.target_kl is not None and self.target_kl <= 0) or (self.kl_horizon is not None and self.kl_horizon < 1):
            raise UserError("target_kl must be > 0 and kl_horizon >= 1")
        return self


# --- the maths, on tensors ---------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """
    >>> masked_mean(torch.tensor([1.0, 2.0, 9.0]), torch.tensor([1.0, 1.0, 0.0])).item()
    1.5
    """
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Zero mean, unit variance over the unmasked entries (the mean kept when ``shift_mean`` is False)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    return (whitened if shift_mean else whitened + mean) * mask


def kl_shaped_rewards(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, scores: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * (log p - log p_ref) everywhere, plus the sequence's score at its last token.

    >>> r, kl = kl_shaped_rewards(torch.tensor([[-1.0, -1.0, 0.0]]), torch.tensor([[-2.0, -1.0, 0.0]]),
    ...                           torch.tensor([3.0]), torch.tensor([[1.0, 1.0, 0.0]]), 0.5)
    >>> r[:, :2].tolist(), kl.tolist()
    ([[-0.5, 3.0]], [[1.0, 0.0, 0.0]])
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = -kl_coef * kl
    last = mask.sum(1).long().clamp(min=1) - 1
    rewards[torch.arange(len(scores)), last] += scores
    return rewards * mask, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the tokens of each response (masked tokens are terminal).

    >>> adv, ret = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), 1.0, 1.0)
    >>> adv.tolist(), ret.tolist()
    ([[0.5, 0.5]], [[1.0, 1.0]])
    """
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], device=rewards.device)
    steps = rewards.shape[1]
    for t in reversed(range(steps)):
        next_value = values[:, t + 1] * mask[:, t + 1] if t + 1 < steps else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < steps else 0)
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                cliprange: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate loss; also the fraction of clipped tokens and the approximate KL(old || new).

    >>> loss, clipped, kl = policy_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]), torch.ones(1, 2), 0.2)
    >>> loss.item(), clipped.item(), kl.item()
    (0.0, 0.0, 0.0)
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - cliprange, 1 + cliprange)
    loss = masked_mean(torch.max(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    approx_kl = 0.5 * masked_mean((logprobs - old_logprobs) ** 2, mask)
    return loss, clipfrac, approx_kl


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               cliprange_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss (the larger of the clipped and unclipped squared errors) and the clipped fraction."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    losses = torch.max((values - returns) ** 2, (clipped_values - returns) ** 2)
    return 0.5 * masked_mean(losses, mask), masked_mean(((clipped_values - returns) ** 2 > (values - returns) ** 2).float(), mask)


class AdaptiveKL:
    """Ziegler et al. (2019): move the coefficient so that the KL per sequence approaches the target.

    >>> controller = AdaptiveKL(0.1, target=6.0, horizon=10000)
    >>> controller.update(12.0, 100); round(controller.value, 4)
    0.1002
    """

    def __init__(self, value: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = value, target, horizon

    def update(self, current_kl: float, n_sequences: int) -> None:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_sequences / self.horizon


def kl_controller(config: PPOConfig) -> AdaptiveKL | None:
    """The adaptive controller for ``adaptive_kl`` (None: a fixed ``kl_coef``)."""
    if not config.adaptive_kl:
        return None
    return AdaptiveKL(config.kl_coef, TARGET_KL if config.target_kl is None else config.target_kl,
                      KL_HORIZON if config.kl_horizon is None else config.kl_horizon)


def entropy(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    probabilities = F.softmax(logits, dim=-1)
    return masked_mean(torch.logsumexp(logits, dim=-1) - (probabilities * logits).sum(-1), mask)


# --- the model ----------------------------------------------------------------------------------------------------


class ActorCritic(nn.Module):
    """The causal LM (actor) with a linear value head (critic) on its last hidden state."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy
        hidden = policy.config.hidden_size
        self.value_head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.policy(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask),
                          output_hidden_states=True, use_cache=False)
        values = self.value_head(out.hidden_states[-1].to(self.value_head.weight.dtype)).squeeze(-1)
        return out.logits, values


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip left padding, as ``generate`` computes them (otherwise scoring and sampling disagree).

    >>> positions(torch.tensor([[0, 0, 1, 1, 1]])).tolist()
    [[0, 0, 0, 1, 2]]
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def response_logprobs(logits: torch.Tensor, responses: torch.Tensor, prompt_length: int, temperature: float) -> torch.Tensor:
    """Log-probs of the response tokens: the logits at positions P-1 .. P+R-2 predict tokens P .. P+R-1."""
    scores = logits[:, prompt_length - 1 : -1] / temperature
    return torch.gather(F.log_softmax(scores.float(), dim=-1), 2, responses.unsqueeze(-1)).squeeze(-1)


# --- rollouts -----------------------------------------------------------------------------------------------------


def chat_ids(rendered: Any) -> list[int]:
    """``apply_chat_template(..., tokenize=True)`` returns ids, or an encoding with ``input_ids``, by version."""
    return list(rendered["input_ids"]) if hasattr(rendered, "keys") else list(rendered)


class HFRollout:
    """Sampling with ``generate`` from the policy being trained (left-padded prompts, pure sampling).

    PPO's ratio needs the tokens to be drawn from exactly the distribution it scores (``response_logprobs``: softmax
    of logits / temperature). ``generate`` otherwise starts from the checkpoint's own ``generation_config.json``
    (Qwen2.5-Instruct ships repetition_penalty 1.05; others min_p, no_repeat_ngram_size, top_k 20, extra EOS ids ...),
    whose processors would bend the sampling distribution away from the scored one and bias every ratio. So the
    model's defaults are set aside for the call and only ``sampling_config`` applies."""

    def __init__(self, tokenizer: Any, config: PPOConfig) -> None:
        self.tokenizer, self.config = tokenizer, config
        self.generation_config = sampling_config(tokenizer, config)

    def generate(self, policy: nn.Module, batch: Any) -> torch.Tensor:
        with model_defaults_aside(policy), torch.no_grad():
            return policy.generate(**batch, generation_config=self.generation_config)

    def sync(self, policy: nn.Module) -> None:
        pass  # generate uses the live weights


def sampling_config(tokenizer: Any, config: PPOConfig) -> Any:
    """Plain sampling at ``config.temperature`` (``plain_sampling``) for ``response_length`` tokens."""
    return plain_sampling(tokenizer, config.temperature, config.response_length)


def plain_sampling(tokenizer: Any, temperature: float, max_new_tokens: int) -> Any:
    """Sampling from softmax(logits / temperature) itself: no top-k / top-p / min-p cut, no penalties, stopping
    only at the tokenizer's EOS (the one ``response_mask`` looks for) or after ``max_new_tokens`` tokens. Pass it
    with ``generate`` under ``model_defaults_aside``."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=True, temperature=temperature, top_k=0, top_p=1.0, min_p=0.0, typical_p=1.0,
        epsilon_cutoff=0.0, eta_cutoff=0.0, repetition_penalty=1.0, encoder_repetition_penalty=1.0,
        no_repeat_ngram_size=0, min_length=0, num_beams=1, renormalize_logits=False,
        max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )


@contextmanager
def model_defaults_aside(model: nn.Module) -> Iterator[None]:
    """``generate`` fills every field a generation config leaves unset from the model's own
    ``generation_config.json`` (penalties, top-k, extra EOS ids ...): set it aside for the call."""
    from transformers import GenerationConfig

    own = model.generation_config
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = own  # saved with the model, for its users


class VLLMRollout:
    """Sampling with an in-process ``vllm.LLM`` on the same GPU (prefix caching on); after every update the policy's
    weights are loaded into it. Needs the ``vllm`` extra and a GPU (tested under the ``gpu`` marker)."""

    def __init__(self, policy_path: str, tokenizer: Any, config: PPOConfig, accelerator: Any) -> None:
        require_cuda_for_vllm("rollout=vllm", instead="--rollout hf")
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise UserError("rollout=vllm needs the vllm extra (pip install 'rlhf-pipeline[vllm]') and a GPU") from None
        import os
        import socket

        self.tokenizer, self.config, self.device = tokenizer, config, accelerator.device
        # The engine must live in this process (so that its weights can be replaced after each update): vLLM's
        # "external_launcher" executor, which reads the torch.distributed variables of the launch (as TRL's colocate
        # mode does). A single process gets a loopback rendezvous of its own.
        os.environ["RANK"] = str(accelerator.process_index)
        os.environ["LOCAL_RANK"] = str(accelerator.local_process_index)
        os.environ["WORLD_SIZE"] = str(accelerator.num_processes)
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        if "MASTER_PORT" not in os.environ:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(probe.getsockname()[1])
        self.llm = LLM(model=policy_path, gpu_memory_utilization=config.vllm_gpu_memory_utilization,
                       enable_prefix_caching=True, seed=config.seed + accelerator.process_index,
                       max_model_len=config.max_prompt_length + config.response_length,
                       distributed_executor_backend="external_launcher", max_num_batched_tokens=4096)
        # Plain sampling, as HFRollout's (a SamplingParams of our own keeps the model's generation_config defaults
        # out); EOS: only the tokenizer's (``response_mask``'s), not the extra ids a generation_config may list.
        self.params = SamplingParams(temperature=config.temperature, top_p=1.0, top_k=-1, min_p=0.0,
                                     repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0,
                                     ignore_eos=True, stop_token_ids=[tokenizer.eos_token_id], min_tokens=0,
                                     max_tokens=config.response_length)

    def generate(self, policy: nn.Module, batch: Any) -> torch.Tensor:
        prompts = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"],
                                                                    strict=True)]
        outputs = self.llm.generate([{"prompt_token_ids": p} for p in prompts], self.params, use_tqdm=False)
        pad = self.tokenizer.pad_token_id
        responses = [list(o.outputs[0].token_ids) for o in outputs]
        width = max(1, max(len(r) for r in responses))
        tail = torch.full((len(responses), width), pad, dtype=torch.long)
        for row, tokens in enumerate(responses):
            tail[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return torch.cat([batch["input_ids"], tail.to(self.device)], dim=1)

    def sync(self, policy: nn.Module) -> None:
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.model.load_weights((name, param.data) for name, param in policy.named_parameters())
        self.llm.reset_prefix_cache()


# --- the loop -----------------------------------------------------------------------------------------------------


@dataclass
class PPOReport:
    updates: int
    seconds: float
    history: list[dict[str, float]]
    out_dir: str
    run_id: int | None = None

    def summary(self) -> str:
        first, last = self.history[0], self.history[-1]
        return (f"{self.updates} updates: reward {first['reward']:.3f} -> {last['reward']:.3f}, "
                f"KL {last['kl']:.3f}, {self.seconds:.0f} s")


Scorer = Callable[[Sequence[Any], Sequence[str]], list[float]]


def train_ppo(policy_path: str, scorer: Scorer, prompts: Sequence[list[dict[str, str]]], out_dir: str | Path,
              config: PPOConfig, *, resume: bool = False, log: Callable[[dict[str, float]], None] | None = None,
              reward: dict[str, Any] | None = None) -> PPOReport:
    """Optimise the policy at ``policy_path`` against ``scorer`` on ``prompts``; save it in ``out_dir``.

    Checkpoints (``out_dir/checkpoints/update-N``) carry a fingerprint of the run (``run_fingerprint``); ``resume``
    continues from the latest one only if the fingerprint matches, and a fresh run refuses an ``out_dir`` that
    already holds checkpoints (so that a later ``--resume`` cannot pick up another run's). ``reward`` says what the
    scorer is (``reward_identity``), for the fingerprint."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    config.validate()
    if not prompts:
        raise UserError("PPO needs prompts")
    out = Path(out_dir)
    checkpoints = out / "checkpoints"
    fingerprint = run_fingerprint(policy_path, reward if reward is not None else scorer_identity(scorer), prompts,
                                  config)
    latest = _latest_checkpoint(checkpoints)
    if latest is not None and not resume:
        raise UserError(f"{out} already holds PPO checkpoints (up to {latest.name}) of an earlier run: pass --resume "
                        f"to continue that run, or use a new --out (or delete {checkpoints})")
    if latest is not None:
        _check_same_run(latest, fingerprint)
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    random.seed(config.seed + accelerator.process_index)
    torch.manual_seed(config.seed + accelerator.process_index)
    tokenizer = load_tokenizer(policy_path, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(policy_path)
    reference = copy.deepcopy(policy).eval().requires_grad_(False).to(accelerator.device)
    model = ActorCritic(policy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, eps=1e-5)
    model, optimizer = accelerator.prepare(model, optimizer)
    kl_control = kl_controller(config)
    kl_coef = config.kl_coef
    start, history = 0, []
    if latest is not None:
        accelerator.load_state(str(latest))
        saved = json.loads((latest / "ppo_state.json").read_text())
        start, history, kl_coef = saved["update"], saved["history"], saved["kl_coef"]
        if kl_control:
            kl_control.value = kl_coef
    encoded = [chat_ids(tokenizer.apply_chat_template(p, add_generation_prompt=True))[-config.max_prompt_length:]
               for p in prompts]
    rollout = (VLLMRollout(policy_path, tokenizer, config, accelerator) if config.rollout == "vllm"
               else HFRollout(tokenizer, config))
    started = time.perf_counter()
    for update in range(start, config.updates):
        # 1. rollout
        picks = random.sample(range(len(prompts)), min(config.prompts_per_rollout, len(prompts)))
        batch = tokenizer.pad({"input_ids": [encoded[i] for i in picks]}, return_tensors="pt").to(accelerator.device)
        sequences = rollout.generate(accelerator.unwrap_model(model).policy, batch)
        prompt_length = batch["input_ids"].shape[1]
        responses = sequences[:, prompt_length:]
        mask, finished = response_mask(responses, tokenizer.eos_token_id)
        texts = [tokenizer.decode(r[m.bool()], skip_special_tokens=True) for r, m in zip(responses, mask, strict=True)]
        # 2. score
        scores = torch.tensor(scorer([prompts[i] for i in picks], texts), dtype=torch.float, device=accelerator.device)
        raw_scores = scores.clone()
        if config.missing_eos_penalty is not None:
            scores = scores - config.missing_eos_penalty * (~finished).float()
        if config.whiten_rewards:
            scores = masked_whiten(scores, torch.ones_like(scores), shift_mean=False)
        attention = torch.cat([batch["attention_mask"], mask.long()], dim=1)
        # 3. old log-probs, reference log-probs, values
        with torch.no_grad():
            logits, values = model(sequences, attention)
            old_logprobs = response_logprobs(logits, responses, prompt_length, config.temperature)
            old_values = values[:, prompt_length - 1 : -1]
            ref_logits = reference(input_ids=sequences, attention_mask=attention, position_ids=positions(attention),
                                   use_cache=False).logits
            ref_logprobs = response_logprobs(ref_logits, responses, prompt_length, config.temperature)
        # 4. rewards per token, 5. advantages
        rewards, kl = kl_shaped_rewards(old_logprobs, ref_logprobs, scores, mask, kl_coef)
        advantages, returns = gae(rewards, old_values, mask, config.gamma, config.lam)
        advantages = masked_whiten(advantages, mask)
        # 6. optimise
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clipfrac": [], "approx_kl": [],
                                         "entropy": [], "value_clipfrac": []}
        for _ in range(config.ppo_epochs):
            for chunk in torch.randperm(len(picks)).split(config.mini_batch_size):
                new_logits, new_values = model(sequences[chunk], attention[chunk])
                new_logprobs = response_logprobs(new_logits, responses[chunk], prompt_length, config.temperature)
                pg, clipfrac, approx_kl = policy_loss(new_logprobs, old_logprobs[chunk], advantages[chunk], mask[chunk],
                                                      config.cliprange)
                vf, vf_clipfrac = value_loss(new_values[:, prompt_length - 1 : -1], old_values[chunk], returns[chunk],
                                             mask[chunk], config.cliprange_value)
                accelerator.backward(pg + config.vf_coef * vf)
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
                with torch.no_grad():
                    ent = entropy(new_logits[:, prompt_length - 1 : -1].float() / config.temperature, mask[chunk])
                for key, value in (("policy_loss", pg), ("value_loss", vf), ("clipfrac", clipfrac),
                                   ("approx_kl", approx_kl), ("entropy", ent), ("value_clipfrac", vf_clipfrac)):
                    stats[key].append(float(value.detach()) if torch.is_tensor(value) else float(value))
        rollout.sync(accelerator.unwrap_model(model).policy)
        # 7. KL control, logging, checkpoints
        mean_kl = float(accelerator.gather(kl.sum(1)).mean())
        if kl_control is not None:
            kl_control.update(mean_kl, len(picks) * accelerator.num_processes)
            kl_coef = kl_control.value
        record = {
            "update": update + 1, "reward": float(accelerator.gather(raw_scores).mean()), "kl": mean_kl,
            "kl_coef": kl_coef, "response_length": float(mask.sum(1).float().mean()),
            **{key: sum(values_) / len(values_) for key, values_ in stats.items()},
        }
        history.append(record)
        if log is not None and accelerator.is_main_process:
            log(record)
        if (update + 1) % config.save_every == 0 or update + 1 == config.updates:
            _checkpoint(accelerator, checkpoints / f"update-{update + 1}", update + 1, history, kl_coef, fingerprint)
    seconds = time.perf_counter() - started
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        final.policy.save_pretrained(out)
        tokenizer.padding_side = "right"
        tokenizer.save_pretrained(out)
        torch.save(final.value_head.state_dict(), out / "value_head.pt")
        (out / "ppo_log.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    return PPOReport(updates=config.updates, seconds=round(seconds, 1), history=history, out_dir=str(out))


def response_mask(responses: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """1 for the tokens up to and including the first EOS; and whether each response reached an EOS."""
    is_eos = responses == eos_token_id
    finished = is_eos.any(1)
    first = torch.where(finished, is_eos.float().argmax(1), torch.full_like(finished, responses.shape[1] - 1, dtype=torch.long))
    positions = torch.arange(responses.shape[1], device=responses.device).unsqueeze(0)
    return (positions <= first.unsqueeze(1)).float(), finished


def _checkpoint(accelerator: Any, folder: Path, update: int, history: list[dict[str, float]], kl_coef: float,
                fingerprint: dict[str, Any]) -> None:
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        (folder / "ppo_state.json").write_text(json.dumps({"update": update, "history": history, "kl_coef": kl_coef,
                                                           "run": fingerprint}))


def _latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("update-*"), key=lambda p: int(p.name.split("-")[1])) if folder.exists() else []
    return found[-1] if found else None


# --- which run a checkpoint belongs to --------------------------------------------------------------------------

# Settings that may change between a run and its resumption: how long it runs, how often it saves, which engine
# samples. Every other PPOConfig field is part of the run's identity.
RESUMABLE_SETTINGS = ("updates", "save_every", "rollout", "vllm_gpu_memory_utilization")


def run_fingerprint(policy_path: str, reward: dict[str, Any], prompts: Sequence[Any], config: PPOConfig
                    ) -> dict[str, Any]:
    """What makes a PPO run this run: the starting policy (``folder_fingerprint`` of its files when it is a directory), the
    reward, the prompts (a hash of their contents) and the settings outside ``RESUMABLE_SETTINGS``. Each entry is
    ``{"id": compared, "shown": for messages}`` so that a moved or copied model directory still matches."""
    text = json.dumps(list(prompts), sort_keys=True, ensure_ascii=False)
    settings = {k: v for k, v in config_json(config).items() if k not in RESUMABLE_SETTINGS}
    return {
        "policy": {"id": folder_fingerprint(Path(policy_path)) if Path(policy_path).is_dir() else policy_path,
                   "shown": str(Path(policy_path).resolve()) if Path(policy_path).is_dir() else policy_path},
        "reward": reward,
        "prompts": {"id": hashlib.sha256(text.encode()).hexdigest(), "shown": f"{len(prompts)} prompts"},
        "settings": {"id": settings, "shown": settings},
    }


def reward_identity(spec: str, model_dir: str | None) -> dict[str, Any]:
    """The fingerprint's reward entry for ``rm:DIR`` / ``rule:SPEC``: a model by its weights, a rule by its spec."""
    if model_dir is None:
        return {"id": spec, "shown": spec}
    return {"id": folder_fingerprint(Path(model_dir)), "shown": f"{spec} ({Path(model_dir).resolve()})"}


def scorer_identity(scorer: Scorer) -> dict[str, Any]:
    """A best guess for a scorer handed in as a bare callable: its qualified name and, for a function, its code."""
    name = f"{getattr(scorer, '__module__', '')}.{getattr(scorer, '__qualname__', type(scorer).__qualname__)}"
    code = getattr(scorer, "__code__", None)
    digest = hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()[:16] if code else ""
    return {"id": f"{name}:{digest}", "shown": name}


def _check_same_run(checkpoint: Path, fingerprint: dict[str, Any]) -> None:
    saved = json.loads((checkpoint / "ppo_state.json").read_text()).get("run")
    if saved is None:
        warnings.warn(f"{checkpoint} predates run fingerprints: resuming it without checking that it belongs to "
                      "this run (same policy, reward, prompts and settings)", stacklevel=3)
        return
    differences = []
    for key in ("policy", "reward", "prompts"):
        if saved[key]["id"] != fingerprint[key]["id"]:
            was, now = saved[key]["shown"], fingerprint[key]["shown"]
            differences.append(f"{key} (checkpoint: {was}, now: {now}{'' if was != now else ', changed contents'})")
    was, now = saved["settings"]["id"], fingerprint["settings"]["id"]
    changed = [f"{k} {was.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(was) | set(now)) if was.get(k) != now.get(k)]
    if changed:
        differences.append(f"settings ({', '.join(changed)})")
    if differences:
        raise UserError(f"{checkpoint} belongs to another PPO run; these differ: {'; '.join(differences)}. Resume "
                        f"with what that run used, or start a new run with a new --out")


def config_json(config: PPOConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if not (isinstance(v, float) and math.isnan(v))}
