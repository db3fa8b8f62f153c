"""Policy optimisation: generation, DPO (TRL), PPO (ours, on accelerate), GRPO/RLOO (TRL), policy eval (issue 7)."""
