"""The pieces of PPO on hand-built tensors, each against a plain re-derivation (loops over one sequence at a time)."""

from __future__ import annotations

import math

import pytest
import torch

from policy.ppo import (
    AdaptiveKL,
    ActorCritic,
    response_mask,
    gae,
    kl_shaped_rewards,
    masked_mean,
    masked_whiten,
    policy_loss,
    positions,
    response_logprobs,
    value_loss,
)


def _gae_one(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """Textbook GAE for one episode of len(rewards) steps; the state after the last step is terminal (value 0)."""
    advantages, running = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(rewards) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return advantages


def _padded(rows: list[list[float]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.zeros(len(rows), width)
    mask = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        data[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return data, mask


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0), (0.99, 0.0)])
def test_gae_matches_the_per_episode_recursion_with_ragged_lengths(gamma: float, lam: float) -> None:
    generator = torch.Generator().manual_seed(0)
    lengths = [5, 1, 3, 7]
    rewards = [torch.randn(n, generator=generator).tolist() for n in lengths]
    values = [torch.randn(n, generator=generator).tolist() for n in lengths]
    r, mask = _padded(rewards, 7)
    v, _ = _padded(values, 7)
    # garbage behind the mask must not leak into the result
    r = r + (1 - mask) * 100
    v = v + (1 - mask) * -50
    advantages, returns = gae(r, v, mask, gamma, lam)
    for i, n in enumerate(lengths):
        expected = _gae_one(rewards[i], values[i], gamma, lam)
        assert advantages[i, :n].tolist() == pytest.approx(expected, abs=1e-5)
        assert returns[i, :n].tolist() == pytest.approx([a + b for a, b in zip(expected, values[i], strict=True)],
                                                        abs=1e-5)
        assert advantages[i, n:].abs().sum() == 0 and returns[i, n:].abs().sum() == 0


def test_gae_with_lambda_one_and_no_discount_is_return_minus_value() -> None:
    rewards = torch.tensor([[0.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), 1.0, 1.0)
    assert returns.tolist() == [[2.0, 2.0, 2.0]]
    assert advantages.tolist() == [[1.5, 1.0, 0.5]]


def test_kl_penalty_at_every_token_and_score_at_the_last_real_token() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -0.5, -9.0], [-0.1, -0.2, -0.3, -0.4]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -1.0], [-0.1, -0.2, -0.3, -0.4]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    scores = torch.tensor([2.0, -1.0])
    rewards, kl = kl_shaped_rewards(logprobs, ref, scores, mask, kl_coef=0.1)
    torch.testing.assert_close(kl, torch.tensor([[0.5, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 2.0, 0.0], [0.0, 0.0, 0.0, -1.0]]))


def test_clipped_policy_loss_value_and_gradients() -> None:
    old = torch.zeros(1, 4)
    # ratios e^0.5 (above 1.2), e^-0.5 (below 0.8), e^0.1, 1
    new = torch.tensor([[0.5, -0.5, 0.1, 0.0]], requires_grad=True)
    advantages = torch.tensor([[1.0, -1.0, 1.0, -2.0]])
    mask = torch.ones(1, 4)
    loss, clipfrac, approx_kl = policy_loss(new, old, advantages, mask, cliprange=0.2)
    ratio = [math.exp(0.5), math.exp(-0.5), math.exp(0.1), 1.0]
    per_token = [
        max(-1.0 * ratio[0], -1.0 * 1.2),  # positive advantage, ratio too high: clipped at 1.2
        max(1.0 * ratio[1], 1.0 * 0.8),  # negative advantage, ratio too low: clipped at 0.8
        -ratio[2],
        2.0,
    ]
    assert loss.item() == pytest.approx(sum(per_token) / 4, abs=1e-6)
    assert clipfrac.item() == pytest.approx(0.5)
    assert approx_kl.item() == pytest.approx(0.5 * (0.25 + 0.25 + 0.01) / 4, abs=1e-6)
    loss.backward()
    grad = new.grad[0].tolist()
    assert grad[0] == 0.0 and grad[1] == 0.0  # clipped tokens push no further
    assert grad[2] == pytest.approx(-ratio[2] / 4, abs=1e-6)
    assert grad[3] == pytest.approx(2.0 / 4, abs=1e-6)


def test_masked_tokens_do_not_count_in_the_losses() -> None:
    old = torch.zeros(1, 3)
    new = torch.tensor([[0.0, 0.0, 5.0]])
    advantages = torch.tensor([[1.0, 1.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, clipfrac, _ = policy_loss(new, old, advantages, mask, 0.2)
    assert loss.item() == pytest.approx(-1.0) and clipfrac.item() == 0.0
    vloss, _ = value_loss(torch.tensor([[1.0, 1.0, 50.0]]), torch.tensor([[1.0, 1.0, 0.0]]),
                          torch.tensor([[2.0, 0.0, 0.0]]), mask, 0.2)
    assert vloss.item() == pytest.approx(0.5 * (1.0 + 1.0) / 2)


def test_value_loss_takes_the_larger_of_clipped_and_unclipped_errors() -> None:
    old = torch.tensor([[0.0, 0.0]])
    new = torch.tensor([[1.0, 0.1]])
    returns = torch.tensor([[1.0, 1.0]])
    loss, clipfrac = value_loss(new, old, returns, torch.ones(1, 2), cliprange_value=0.2)
    # token 0: unclipped error 0, clipped (0.2) error 0.64 -> 0.64; token 1: both within the clip -> 0.81
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.81) / 2)
    assert clipfrac.item() == pytest.approx(0.5)


def test_whitening_over_the_mask_only() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 1000.0], [4.0, 5.0, 6.0, -1000.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]])
    white = masked_whiten(x, mask)
    assert masked_mean(white, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert masked_mean(white**2, mask).item() == pytest.approx(1.0, abs=1e-4)
    assert white[:, 3].abs().sum() == 0
    kept = masked_whiten(x, mask, shift_mean=False)
    assert masked_mean(kept, mask).item() == pytest.approx(3.5, abs=1e-5)


def test_adaptive_kl_moves_toward_the_target_with_a_clipped_step() -> None:
    up = AdaptiveKL(0.1, target=6.0, horizon=100)
    up.update(60.0, 10)  # error clipped to +0.2
    assert up.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    down = AdaptiveKL(0.1, target=6.0, horizon=100)
    down.update(3.0, 10)  # error -0.5 clipped to -0.2
    assert down.value == pytest.approx(0.1 * (1 - 0.2 * 10 / 100))
    steady = AdaptiveKL(0.1, target=6.0, horizon=100)
    steady.update(6.0, 10)
    assert steady.value == pytest.approx(0.1)


def test_response_mask_stops_after_the_first_eos() -> None:
    eos = 9
    responses = torch.tensor([[1, 2, eos, eos, eos], [eos, 3, 4, 5, 6], [1, 2, 3, 4, 5]])
    mask, finished = response_mask(responses, eos)
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert finished.tolist() == [True, True, False]


def test_scoring_pass_reproduces_the_sampling_distribution_under_left_padding() -> None:
    """The log-probs PPO optimises must be those the tokens were sampled with: same positions, same temperature.

    (Rotary embeddings are shift-invariant, so Llama forgives a missing ``position_ids``; models with absolute
    positions do not, which is why ``ActorCritic`` passes them.)"""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=1, num_key_value_heads=1, head_dim=64, pad_token_id=0,
                         bos_token_id=None, eos_token_id=None)
    model = LlamaForCausalLM(config).eval()
    prompts = torch.tensor([[0, 0, 0, 5, 6], [7, 8, 9, 10, 11]])  # the first one left-padded
    attention = (prompts != 0).long()
    temperature = 0.7
    with torch.no_grad():
        out = model.generate(input_ids=prompts, attention_mask=attention, do_sample=True, temperature=temperature,
                             top_k=0, top_p=1.0, max_new_tokens=6, output_logits=True, return_dict_in_generate=True,
                             pad_token_id=0)
        responses = out.sequences[:, prompts.shape[1]:]
        sampled = torch.stack(out.logits, 1) / temperature
        expected = torch.gather(torch.log_softmax(sampled, -1), 2, responses.unsqueeze(-1)).squeeze(-1)
        full_attention = torch.cat([attention, torch.ones_like(responses)], 1)
        actor = ActorCritic(model)
        logits, values = actor(out.sequences, full_attention)
        got = response_logprobs(logits, responses, prompts.shape[1], temperature)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
        assert values.shape == out.sequences.shape
    assert positions(full_attention)[0, :4].tolist() == [0, 0, 0, 0]
