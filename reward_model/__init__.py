"""Reward models: train (TRL RewardTrainer), evaluate and score from exported preference pairs (issue 6)."""
