"""``--set KEY=VALUE`` on the real trainer configs (TRL's DPOConfig / GRPOConfig, our RMConfig and PPOConfig): each
value takes its field's type, and every wrong name or value is an error that names it."""

from __future__ import annotations

import pytest
from transformers.trainer_utils import SaveStrategy

from pipeline.config_options import make_config, parse_assignments, settings_of
from pipeline.errors import UserError
from policy.dpo import DPOStageConfig
from policy.dpo import default_config as dpo_config
from policy.grpo import ALGORITHMS
from policy.grpo import default_config as online_config
from policy.ppo import PPOConfig
from reward_model.train import RMConfig
from reward_model.train import default_config as rm_config


def test_values_take_the_type_of_their_field() -> None:
    values = parse_assignments(["loss_weights=1,0.5", "max_length=null", "activation_checkpointing=yes",
                                "save_strategy=epoch", "lr_scheduler_kwargs={\"min_lr\": 1e-7}", "warmup_steps=0.1",
                                "report_to=none", "seed=7"], DPOStageConfig)
    assert values == {"loss_weights": [1.0, 0.5], "max_length": None, "activation_checkpointing": True,
                      "save_strategy": SaveStrategy.EPOCH, "lr_scheduler_kwargs": {"min_lr": 1e-7},
                      "warmup_steps": 0.1, "report_to": ["none"], "seed": 7}
    config = dpo_config("/tmp/out", values, loss_type=["sigmoid", "sft"])
    assert config.loss_weights == [1.0, 0.5] and config.report_to == [] and config.max_length is None
    assert rm_config("/tmp/out", parse_assignments(["layer_lr_decay=0.8"], RMConfig)).layer_lr_decay == 0.8
    grpo = online_config("grpo", "/tmp/out", parse_assignments(["scale_rewards=batch", "loss_type=dr_grpo"],
                                                               ALGORITHMS["grpo"][0]))
    assert (grpo.scale_rewards, grpo.loss_type) == ("batch", "dr_grpo")


@pytest.mark.parametrize(("item", "message"), [
    ("beta", "--set beta: write KEY=VALUE"),
    ("=1", "--set =1: write KEY=VALUE"),
    ("betta=0.1", "--set betta=0.1: DPOStageConfig has no option 'betta'"),
    ("beta=strong", "--set beta=strong: beta takes a number, not 'strong'"),
    ("seed=1.5", "--set seed=1.5: seed takes a whole number, not '1.5'"),
    ("use_lora=maybe", "--set use_lora=maybe: use_lora takes true or false, not 'maybe'"),
])
def test_a_bad_assignment_is_named(item: str, message: str) -> None:
    with pytest.raises(UserError) as caught:
        parse_assignments([item], DPOStageConfig)
    assert str(caught.value).startswith(message)


def test_one_key_twice_or_both_ways_and_the_class_own_checks_are_errors() -> None:
    with pytest.raises(UserError, match="beta is set twice"):
        parse_assignments(["beta=0.1", "beta=0.2"], DPOStageConfig)
    with pytest.raises(UserError, match="beta: given both as an option and with --set"):
        dpo_config("/tmp/out", {"beta": 0.2}, beta=0.3)
    with pytest.raises(UserError, match="loss_weights"):  # DPOConfig's own check, as a UserError
        dpo_config("/tmp/out", {"loss_weights": [1.0]}, loss_type=["sigmoid", "sft"])
    with pytest.raises(UserError, match="hourly"):  # a text-or-enum field: TrainingArguments says what is wrong
        dpo_config("/tmp/out", parse_assignments(["save_strategy=hourly"], DPOStageConfig))
    with pytest.raises(UserError, match="unknown ppo option"):
        make_config(PPOConfig, {}, {"gama": 0.9}, what="ppo")


def test_settings_on_record_are_json_and_leave_out_hub_tokens() -> None:
    config = dpo_config("/tmp/out", {"hub_token": "secret", "lr_scheduler_kwargs": {"min_lr": 0.0}})
    settings = settings_of(config)
    assert "hub_token" not in settings and settings["lr_scheduler_kwargs"] == {"min_lr": 0.0}
    assert settings["beta"] == 0.1 and settings["output_dir"] == "/tmp/out/checkpoints"
