"""Scoring with a trained reward model: models loaded once, length-sorted batches, no per-call reloads.

``RewardScorer`` is the reward PPO, GRPO and RLOO call (``scorer(prompts=..., completions=...)`` has the
signature TRL expects of a reward function) and what ``rlhf rm eval`` and ``rlhf rm score`` use. An ensemble
(``rlhf rm train --ensemble N``) scores with the mean of its members' rewards; each input is encoded once. With
``uncertainty_penalty`` k the reward is mean - k * std over the members: a conservative reward for PPO, lower
where the members disagree, which is where a policy can exploit one model's mistakes (Coste et al. 2023,
"Reward Model Ensembles Help Mitigate Overoptimization").
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.hf_utils import check_model_path, load_tokenizer
from reward_model.data import Encoder, messages_of, text_of
from reward_model.train import RM_CARD


class RewardScorer:
    def __init__(self, model_dir: str | Path, *, device: str | None = None, batch_size: int = 32,
                 max_length: int | None = None, uncertainty_penalty: float = 0.0) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification

        check_model_path(model_dir, hint="train one into it: `rlhf rm train --data DIR --out {path}`", hub=False)
        path = Path(model_dir)
        card = json.loads((path / RM_CARD).read_text()) if (path / RM_CARD).is_file() else {}
        folders = [path / name for name in card.get("members", [])] or [path]
        if uncertainty_penalty and len(folders) < 2:
            raise UserError(f"{path}: an uncertainty penalty needs an ensemble (rlhf rm train --ensemble N)")
        self.uncertainty_penalty = uncertainty_penalty
        for folder in folders:
            if not (folder / "config.json").is_file():
                raise UserError(f"{folder}: not a model directory (no config.json)")
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = load_tokenizer(folders[0])  # the members share their base's tokenizer
        self.models = [AutoModelForSequenceClassification.from_pretrained(folder).to(self.device).eval()
                       for folder in folders]
        self.encoder = Encoder(self.tokenizer, max_length or card.get("max_length") or 512)
        self.batch_size = batch_size
        self.__name__ = f"rm:{path.name}"  # TRL names reward functions after __name__

    def score(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[float]:
        """One reward per (prompt, response); prompts as messages or text, responses as text or message lists.
        For an ensemble, the mean of its members' rewards, less ``uncertainty_penalty`` times their spread."""
        return self.combine(self.score_members(prompts, responses))

    def combine(self, members: Sequence[Sequence[float]]) -> list[float]:
        """Per input, the members' mean reward less ``uncertainty_penalty`` times their spread (population std)."""
        rewards = []
        for values in zip(*members, strict=True):
            mean = sum(values) / len(values)
            spread = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
            rewards.append(mean - self.uncertainty_penalty * spread)
        return rewards

    def score_members(self, prompts: Sequence[Any], responses: Sequence[Any]) -> list[list[float]]:
        """Each member's rewards (one list per model; a single model gives one list)."""
        import torch

        encoded = [self.encoder.encode(messages_of(p), text_of(r)) for p, r in zip(prompts, responses, strict=True)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # little padding per batch
        rewards = [[0.0] * len(encoded) for _ in self.models]
        pad = self.tokenizer.pad_token_id or 0
        with torch.no_grad():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = [encoded[i] for i in rows]
                width = max(len(ids) for ids in batch)
                ids = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, seq in enumerate(batch):
                    ids[row, : len(seq)] = torch.tensor(seq)
                    mask[row, : len(seq)] = 1
                ids, mask = ids.to(self.device), mask.to(self.device)
                for model, column in zip(self.models, rewards, strict=True):
                    values = model(input_ids=ids, attention_mask=mask).logits[:, 0].float().cpu().tolist()
                    for i, value in zip(rows, values, strict=True):
                        column[i] = value
        return rewards

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        """TRL reward-function signature (GRPO, RLOO)."""
        return self.score(prompts, completions)
