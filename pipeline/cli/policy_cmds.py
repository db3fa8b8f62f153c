"""``rlhf generate|sft|dpo|ppo|grpo|rloo|eval`` (the policy stages), ``rlhf rule run`` and ``rlhf models toy``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.context import (
    DbOption,
    SetOption,
    console,
    examples,
    open_store,
    progress_bar,
    say,
    stage_settings,
    sub_app,
)

BackendOption = Annotated[str, typer.Option(
    help="transformers (in-process, CPU or GPU), vllm (in-process, GPU) or openai (any OpenAI-compatible endpoint).")]
InProcessBackendOption = Annotated[str, typer.Option(
    help="transformers (in-process, CPU or GPU) or vllm (in-process, GPU): best-of-n fine-tunes the policy's "
         "weights, so it samples in-process.")]
RewardOption = Annotated[list[str], typer.Option("--reward", help="rm:DIR or rule:SPEC (repeatable; summed).")]
RewardWeightOption = Annotated[list[float] | None, typer.Option("--reward-weight", help="One weight per --reward.")]


def generate(
    ctx: typer.Context,
    policy: Annotated[str, typer.Option(help="Model directory or HF id (or the model name at --base-url).")],
    n: Annotated[int | None, typer.Option(help="Samples per prompt (default 4).")] = None,
    split: Annotated[str | None, typer.Option(help="Only prompts of this split (train or test).")] = None,
    source: Annotated[str | None, typer.Option(help="Only prompts of this source.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many prompts (the next ones without answers).")] = None,
    generator: Annotated[str | None, typer.Option(help="Name to store responses under (default: the policy's "
                                                        "folder name).")] = None,
    backend: Annotated[str | None, typer.Option(
        help="transformers (in-process, CPU or GPU; the default), vllm (in-process, GPU) or openai (any "
             "OpenAI-compatible endpoint).")] = None,
    base_url: Annotated[str | None, typer.Option(help="Endpoint for --backend openai.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature (0: greedy; default 1).")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling: draw from the most likely tokens that "
                                                     "together reach this probability (default 1: all).")] = None,
    max_new_tokens: Annotated[int | None, typer.Option(help="Tokens per response (default 128).")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed (default 0).")] = None,
    db: DbOption = None,
) -> None:
    """Sample K responses per prompt into the store; prompts that already have them are skipped (resumable).
    The project file's `[generate]` section sets defaults for the sampling options."""
    from pipeline.config_options import make_config
    from policy.generate import FILE_SETTINGS, GenerateOptions
    from policy.generate import generate as run

    flags = {"n": n, "backend": backend, "base_url": base_url, "temperature": temperature, "top_p": top_p,
             "max_new_tokens": max_new_tokens, "seed": seed}
    options = make_config(GenerateOptions, {"policy": policy, "generator": generator, "split": split,
                                            "source": source, "limit": limit}, flags, what="generate",
                          file_values=stage_settings(ctx, "generate", GenerateOptions, FILE_SETTINGS))
    with open_store(ctx, db) as store, progress_bar("generating", unit_bytes=False) as update:
        report = run(store.sessions, options, on_progress=update)
    say(f"{report.summary()} [run {report.run_id}]")


def sft(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="An `rlhf demonstrations export` directory (its train split).")],
    policy: Annotated[str, typer.Option(help="The starting policy: local path or HF id.")],
    out: Annotated[str, typer.Option(help="Directory for the fine-tuned policy.")],
    epochs: Annotated[float | None, typer.Option(help="Training epochs (default 1).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate (default 2e-5).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Demonstrations per device per step (default 16).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per sequence, prompt and answer (default 1024).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.")] = False,
    set_: SetOption = None,
    db: DbOption = None,
) -> None:
    """Supervised fine-tuning on the answers annotators wrote (TRL SFTTrainer, loss on the answer only):
    checkpoints, `--resume`; recorded as an `sft` run linked to the export's run. The result is a starting policy
    for `rlhf generate`, `rlhf dpo` or `rlhf ppo`."""
    from pipeline.config_options import parse_assignments
    from policy.sft import SFTStageConfig, default_config, run_sft

    config = default_config(out, parse_assignments(set_, SFTStageConfig), policy=policy, num_train_epochs=epochs,
                            learning_rate=learning_rate, per_device_train_batch_size=batch_size,
                            max_length=max_length, seed=seed,
                            file_values=stage_settings(ctx, "sft", SFTStageConfig))
    with open_store(ctx, db) as store:
        report = run_sft(store.sessions, data, out, config, resume=resume)
    say(f"{out}: {report.summary()} in {report.seconds:.0f} s [run {report.run_id}]")


def dpo(
    ctx: typer.Context,
    data: Annotated[str, typer.Option(help="An `rlhf export` directory (its train split) or a pairs JSONL.")],
    policy: Annotated[str, typer.Option(help="The starting policy (and reference): local path or HF id.")],
    out: Annotated[str, typer.Option(help="Directory for the trained policy.")],
    loss_type: Annotated[str | None, typer.Option(help="TRL loss: sigmoid, ipo, hinge, robust, apo_zero, ... "
                                                       "(comma-separated for a mixture).")] = None,
    beta: Annotated[float | None, typer.Option(help="KL strength (default 0.1).")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs (default 1).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate (default 1e-6).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Pairs per device per step (default 8).")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per sequence; the context is cut from the left.")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--no-lora", help="Train LoRA adapters; reference = the "
                                                                       "adapter-free model (default: off).")] = None,
    hard_labels: Annotated[bool | None, typer.Option("--hard-labels/--soft-labels", help="Ignore the export's soft "
                                                                                       "scores (default: use them).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.")] = False,
    set_: SetOption = None,
    db: DbOption = None,
) -> None:
    """Direct Preference Optimisation on an export (TRL DPOTrainer): every pair kept, reference log-probs cached
    on disk across runs, soft labels from the export, LoRA on request; recorded as a `dpo` run."""
    from pipeline.config_options import parse_assignments
    from policy.dpo import DPOStageConfig, default_config
    from policy.stage import run_dpo

    losses = loss_type.split(",") if loss_type and "," in loss_type else loss_type
    config = default_config(out, parse_assignments(set_, DPOStageConfig), policy=policy, loss_type=losses, beta=beta,
                            file_values=stage_settings(ctx, "dpo", DPOStageConfig),
                            num_train_epochs=epochs, learning_rate=learning_rate,
                            per_device_train_batch_size=batch_size, max_length=max_length, max_steps=max_steps,
                            use_lora=lora, soft_labels=None if hard_labels is None else not hard_labels)
    with open_store(ctx, db) as store:
        report = run_dpo(store.sessions, data, out, config, resume=resume)
    say(f"{out}: {report.summary()} in {report.seconds:.0f} s [run {report.run_id}]")


def _prompts(sessions, prompts: str) -> tuple[list, str]:  # noqa: ANN001
    from policy.stage import file_prompts, store_prompts

    if Path(prompts).is_file():
        return file_prompts(prompts), str(Path(prompts).resolve())
    kind, _, split = prompts.partition(":")
    if kind != "store":
        raise typer.BadParameter("a JSONL file, or store:SPLIT (store:train, store:test, store:)",
                                 param_hint="--prompts")
    return store_prompts(sessions, split or None), prompts


def ppo(
    ctx: typer.Context,
    policy: Annotated[str, typer.Option(help="The starting policy (also the frozen reference).")],
    rm: Annotated[str, typer.Option(help="Reward: a reward-model directory (rm:DIR or DIR) or rule:SPEC.")],
    out: Annotated[str, typer.Option(help="Directory for the trained policy.")],
    prompts: Annotated[str, typer.Option(help="store:SPLIT (prompts in the store) or a JSONL file.")] = "store:train",
    updates: Annotated[int | None, typer.Option(help="Rollout + optimisation iterations (default 100).")] = None,
    prompts_per_rollout: Annotated[int | None, typer.Option(help="Prompts per rollout and process (16).")] = None,
    mini_batch_size: Annotated[int | None, typer.Option(help="Sequences per gradient step (4).")] = None,
    ppo_epochs: Annotated[int | None, typer.Option(help="Passes over each rollout (4).")] = None,
    learning_rate: Annotated[float | None, typer.Option(help="Learning rate (1e-5).")] = None,
    kl_coef: Annotated[float | None, typer.Option(help="KL penalty coefficient (0.05).")] = None,
    adaptive_kl: Annotated[bool | None, typer.Option("--adaptive-kl/--fixed-kl", help="Adapt the KL coefficient to "
                                                                                    "--target-kl (default: fixed).")] = None,
    target_kl: Annotated[float | None, typer.Option(help="Target KL per sequence for --adaptive-kl (6).")] = None,
    response_length: Annotated[int | None, typer.Option(help="Max new tokens per response (48).")] = None,
    whiten_rewards: Annotated[bool | None, typer.Option("--whiten-rewards/--no-whiten-rewards",
                                                        help="Whiten scores per rollout (default: off).")] = None,
    rm_uncertainty_penalty: Annotated[float | None, typer.Option(
        min=0, help="Ensemble RM (rm train --ensemble N): reward = mean - this x std over its models (0).")] = None,
    rollout: Annotated[str | None, typer.Option(help="hf (transformers generate) or vllm (GPU).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.")] = False,
    set_: SetOption = None,
    db: DbOption = None,
) -> None:
    """PPO against a reward model (ours, in policy/ppo.py): rollouts, per-token KL to the frozen reference, value
    head, GAE, clipped losses. Multi-GPU: `accelerate launch --config_file policy/accelerate_configs/zero2.yaml
    -m pipeline ppo ...`."""
    from pipeline.config_options import make_config, parse_assignments
    from policy.ppo import PPOConfig
    from policy.stage import run_ppo

    values = {"updates": updates, "prompts_per_rollout": prompts_per_rollout, "mini_batch_size": mini_batch_size,
              "ppo_epochs": ppo_epochs, "learning_rate": learning_rate, "kl_coef": kl_coef, "target_kl": target_kl,
              "response_length": response_length, "rollout": rollout, "seed": seed,
              "adaptive_kl": adaptive_kl, "whiten_rewards": whiten_rewards,
              "rm_uncertainty_penalty": rm_uncertainty_penalty}
    config = make_config(PPOConfig, {}, values, parse_assignments(set_, PPOConfig), what="ppo",
                         file_values=stage_settings(ctx, "ppo", PPOConfig)).validate()
    with open_store(ctx, db) as store:
        prompt_list, source = _prompts(store.sessions, prompts)

        def log(record: dict[str, float]) -> None:
            say(f"update {record['update']:>4}: reward {record['reward']:+.3f}  kl {record['kl']:.3f}  "
                 f"entropy {record['entropy']:.3f}  clipfrac {record['clipfrac']:.3f}  "
                 f"value loss {record['value_loss']:.4f}")

        report = run_ppo(store.sessions, policy, rm, prompt_list, out, config, prompt_source=source, resume=resume,
                         log=log)
    say(f"{out}: {report.summary()} [run {report.run_id}]")


def _online(algorithm: str):  # noqa: ANN202
    def command(
        ctx: typer.Context,
        policy: Annotated[str, typer.Option(help="The starting policy: local path or HF id.")],
        out: Annotated[str, typer.Option(help="Directory for the trained policy.")],
        reward: RewardOption,
        reward_weight: RewardWeightOption = None,
        prompts: Annotated[str, typer.Option(help="store:SPLIT or a JSONL file.")] = "store:train",
        max_steps: Annotated[int | None, typer.Option(help="Training steps (default 100).")] = None,
        num_generations: Annotated[int | None, typer.Option(help="Completions per prompt (default 4).")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Completions per device per step (default 8).")] = None,
        learning_rate: Annotated[float | None, typer.Option(help="Learning rate (default 1e-6).")] = None,
        beta: Annotated[float | None, typer.Option(help="KL coefficient.")] = None,
        max_completion_length: Annotated[int | None, typer.Option(help="Max new tokens (default 128).")] = None,
        use_vllm: Annotated[bool | None, typer.Option("--use-vllm/--no-use-vllm", help="vLLM rollouts (GPU; "
                                                                                     "default: off).")] = None,
        rm_uncertainty_penalty: Annotated[float, typer.Option(
            min=0, help="Ensemble RMs (rm train --ensemble N): each gives mean - this x std over its models.")] = 0.0,
        resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in OUT.")] = False,
        set_: SetOption = None,
        db: DbOption = None,
    ) -> None:
        from pipeline.config_options import parse_assignments
        from pipeline.hf_utils import check_model_path
        from policy.grpo import ALGORITHMS, default_config
        from policy.stage import run_online

        assignments = parse_assignments(set_, ALGORITHMS[algorithm][0])
        config = default_config(algorithm, out, assignments, max_steps=max_steps, num_generations=num_generations,
                                file_values=stage_settings(ctx, algorithm, ALGORITHMS[algorithm][0]),
                                per_device_train_batch_size=batch_size, learning_rate=learning_rate, beta=beta,
                                max_completion_length=max_completion_length, use_vllm=use_vllm)
        check_model_path(policy)  # TRL's trainer loads the policy itself, a missing folder from the hub
        with open_store(ctx, db) as store:
            prompt_list, source = _prompts(store.sessions, prompts)
            report = run_online(store.sessions, algorithm, policy, prompt_list, reward, out, config,
                                prompt_source=source, reward_weights=reward_weight,
                                rm_uncertainty_penalty=rm_uncertainty_penalty, resume=resume)
        say(f"{out}: {report.summary()} [run {report.run_id}]")

    command.__doc__ = (f"{algorithm.upper()} (TRL's {algorithm.upper()}Trainer) rewarded by our reward model and/or "
                       "rules a program checks (RLVR); recorded as a run.")
    return command


def evaluate(
    ctx: typer.Context,
    policy: Annotated[str, typer.Option(help="Policy A (the new one): a model, or stored:GENERATOR for answers "
                                             "already in the store.")],
    baseline: Annotated[str, typer.Option(help="Policy B (the old one): a model, or stored:GENERATOR (e.g. "
                                               "imported reference answers).")],
    judge: Annotated[list[str], typer.Option("--judge", help="rm:DIR, rule:SPEC or a judge name (repeatable).")],
    split: Annotated[str, typer.Option("--prompts", help="The split of held-out prompts.")] = "test",
    limit: Annotated[int | None, typer.Option(help="At most this many prompts.")] = 200,
    policy_name: Annotated[str | None, typer.Option(help="Generator name for A's answers.")] = None,
    baseline_name: Annotated[str | None, typer.Option(help="Generator name for B's answers.")] = None,
    backend: BackendOption = "transformers",
    base_url: Annotated[str | None, typer.Option(help="Endpoint for --backend openai.")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0: greedy).")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling: draw from the most likely tokens that together "
                                              "reach this probability (1: all tokens).")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer.")] = 128,
    out: Annotated[str | None, typer.Option(help="Directory for report.json and report.md.")] = None,
    db: DbOption = None,
) -> None:
    """Win rate of A over B on held-out prompts by each judge (95% interval), length drift, KL(A || B)."""
    from policy.evaluate import EvalOptions, evaluate_policies

    options = EvalOptions(policy, baseline, tuple(judge), split=split, limit=limit, temperature=temperature,
                          top_p=top_p, max_new_tokens=max_new_tokens, backend=backend, base_url=base_url, policy_name=policy_name,
                          baseline_name=baseline_name, out=out)
    with open_store(ctx, db) as store:
        report = evaluate_policies(store.sessions, options, on_progress=lambda text: say(f"... {text}"))
    table = Table("judge", f"{report.policy} wins", "95% interval", "W / T / L", "not judged",
                  "length-controlled [95%]", "mean A", "mean B",
                  title=f"{report.policy} vs {report.baseline} on {report.prompts} prompts")
    for r in report.results:
        means = ("-", "-") if r.mean_a is None else (f"{r.mean_a:.3f}", f"{r.mean_b:.3f}")
        table.add_row(r.judge, f"{r.win_rate:.1%}", f"[{r.low:.1%}, {r.high:.1%}]", f"{r.wins} / {r.ties} / {r.losses}",
                      str(r.unjudged), r.lc_text(), *means)
    console.print(table)
    kl = "" if report.kl is None else f"; KL(A || B) {report.kl.text()}"
    missing = (f"; {report.without_answers} prompts without an answer from both left out" if report.without_answers
               else "")
    say(f"mean length {report.mean_length_a:.0f} vs {report.mean_length_b:.0f} characters{kl}{missing} "
         f"[run {report.run_id}]" + (f"; report in {out}" if out else ""))


def best_of_n(
    ctx: typer.Context,
    policy: Annotated[str, typer.Option(help="The policy to improve: a local path or HF id.")],
    out: Annotated[str, typer.Option(help="Directory for the fine-tuned policy.")],
    reward: RewardOption,
    reward_weight: RewardWeightOption = None,
    n: Annotated[int, typer.Option("--n", min=2, help="Samples per prompt; the best one is kept.")] = 4,
    split: Annotated[str, typer.Option("--prompts", help="The split of prompts to sample.")] = "train",
    limit: Annotated[int | None, typer.Option(help="At most this many prompts.")] = None,
    min_reward: Annotated[float | None, typer.Option(help="Leave out prompts whose best sample scores lower.")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 1.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling (1: all tokens).")] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per sample.")] = 128,
    epochs: Annotated[float, typer.Option(help="Fine-tuning epochs over the chosen answers.")] = 1.0,
    learning_rate: Annotated[float, typer.Option(help="Fine-tuning learning rate.")] = 2e-5,
    batch_size: Annotated[int, typer.Option(help="Fine-tuning batch size.")] = 16,
    seed: Annotated[int, typer.Option(help="Sampling and training seed.")] = 0,
    backend: InProcessBackendOption = "transformers",
    db: DbOption = None,
) -> None:
    """Rejection-sampling fine-tuning: n samples per prompt (stored), the reward picks the best, the policy is
    fine-tuned on them (TRL SFTTrainer); recorded as a run."""
    from policy.best_of_n import run_best_of_n
    from policy.generate import GenerateOptions

    options = GenerateOptions(policy, n=n, backend=backend, split=split, limit=limit, temperature=temperature,
                              top_p=top_p, max_new_tokens=max_new_tokens, seed=seed)
    with open_store(ctx, db) as store:
        report = run_best_of_n(store.sessions, policy, reward, out, options=options, reward_weights=reward_weight,
                               min_reward=min_reward, epochs=epochs, learning_rate=learning_rate,
                               batch_size=batch_size, seed=seed)
    say(f"{out}: {report.summary()} [run {report.run_id}]")


def leaderboard(
    ctx: typer.Context,
    generator: Annotated[list[str], typer.Option("--generator", help="A policy's stored answers, by generator name "
                                                                    "(repeatable; at least two).")],
    judge: Annotated[list[str], typer.Option("--judge", help="rm:DIR, rule:SPEC or a judge name (repeatable).")],
    split: Annotated[str, typer.Option("--prompts", help="The split of held-out prompts.")] = "test",
    limit: Annotated[int | None, typer.Option(help="At most this many prompts.")] = 200,
    out: Annotated[str | None, typer.Option(help="Directory for leaderboard.json and leaderboard.md.")] = None,
    db: DbOption = None,
) -> None:
    """Several policies ranked together from their stored answers: every pair judged on shared held-out prompts,
    Bradley-Terry ratings (Elo scale, 95% intervals) and the win-rate matrix, per judge."""
    from policy.leaderboard import elo_text, group_text, interval_text
    from policy.leaderboard import leaderboard as run_leaderboard

    with open_store(ctx, db) as store:
        report = run_leaderboard(store.sessions, generator, judge, split=split, limit=limit, out=out,
                                 on_progress=lambda text: say(f"... {text}"))
    for board in report.boards:
        order = [s.generator for s in board.standings]
        grouped = bool(board.groups)  # policies never compared, directly or through others: say which group
        table = Table("policy", *(["group"] if grouped else []), "rating", "95% interval", "games", "W / T / L",
                      *(f"vs {g}" for g in order), title=f"{board.judge} on {report.prompts} prompts")
        for s in board.standings:
            rates = board.win_rates[s.generator]
            table.add_row(s.generator, *([group_text(s)] if grouped else []), elo_text(s.rating), interval_text(s),
                          str(s.games), f"{s.wins} / {s.ties} / {s.losses}",
                          *("-" if g == s.generator else "n/a" if rates[g] is None else f"{rates[g]:.0%}" for g in order))
        console.print(table)
        if note := board.separate_scales():
            say(note)
        if board.unjudged:
            say(f"{board.unjudged} games the judge gave no verdict on were left out")
    say(f"[run {report.run_id}]" + (f"; report in {out}" if out else ""))


rule_app = sub_app("Rule-based annotators: checkable preferences, ranked into the store.")


def rule_run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The annotator's name (created on first use).")],
    batch: Annotated[str, typer.Option(help="The comparison batch to rank.")],
    rule: Annotated[str, typer.Option(help="contains:WORD, regex:PATTERN, shorter or longer.")],
    db: DbOption = None,
) -> None:
    """Rank every comparison of a batch by a rule (ties where the rule cannot tell)."""
    from pipeline.rules import run_rule

    with open_store(ctx, db) as store:
        report = run_rule(store.sessions, name, rule, batch)
    say(f"{name} ({rule}) ranked {report.ranked} comparisons of {batch} [run {report.run_id}]")


def models_toy(
    out_dir: Annotated[Path, typer.Argument(help="Directory to save the toy policy in.")],
    examples_: Annotated[int, typer.Option("--examples", help="SFT examples.")] = 2000,
    epochs: Annotated[float, typer.Option(help="SFT epochs.")] = 2.0,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty directory.")] = False,
) -> None:
    """The toy policy of the demo: the tiny chat LM fine-tuned to answer toy prompts (says "indeed" ~25%)."""
    from policy.sft import build_toy_policy

    out = build_toy_policy(out_dir, examples=examples_, epochs=epochs, seed=seed, overwrite=force)
    say(f"toy policy saved to {out}")


def register(app: typer.Typer) -> None:
    app.command("generate", epilog=examples(
        "rlhf generate --policy models/toy --n 4 --split train",
        "rlhf generate --policy Qwen/Qwen2.5-0.5B-Instruct --backend vllm --n 8",
        "rlhf generate --policy my-model --backend openai --base-url http://localhost:8000/v1"))(generate)
    app.command("sft", epilog=examples(
        "rlhf sft --data data/sft --policy models/toy --out models/sft",
        "rlhf sft --data data/sft --policy Qwen/Qwen2.5-0.5B-Instruct --out models/sft --epochs 3 "
        "--learning-rate 1e-5 --set gradient_accumulation_steps=4",
        "rlhf sft --data data/sft --policy models/toy --out models/sft --resume"))(sft)
    app.command("dpo", epilog=examples(
        "rlhf dpo --data data/prefs --policy models/toy --out models/dpo",
        "rlhf dpo --data data/prefs --policy models/toy --out models/dpo-ipo --loss-type ipo --beta 0.5 --lora",
        "rlhf dpo --data data/prefs --policy models/toy --out models/dpo-sft --loss-type sigmoid,sft "
        "--set loss_weights=1,0.5"))(dpo)
    app.command("ppo", epilog=examples(
        "rlhf ppo --policy models/toy --rm models/rm --out models/ppo --updates 40",
        "accelerate launch --config_file policy/accelerate_configs/multi_gpu.yaml -m pipeline ppo --policy P "
        "--rm models/rm --out models/ppo --rollout vllm"))(ppo)
    for algorithm in ("grpo", "rloo"):
        app.command(algorithm, epilog=examples(
            f"rlhf {algorithm} --policy models/toy --reward rm:models/rm --out models/{algorithm}",
            f"rlhf {algorithm} --policy models/toy --reward rule:contains:indeed --reward rm:models/rm "
            f"--reward-weight 1 --reward-weight 0.5 --out models/{algorithm}"))(_online(algorithm))
    app.command("eval", epilog=examples(
        "rlhf eval --policy models/dpo --baseline models/toy --judge rule:contains:indeed --judge rm:models/rm",
        "rlhf eval --policy models/dpo --baseline models/toy --judge gpt4o --out reports/dpo"))(evaluate)
    app.command("best-of-n", epilog=examples(
        "rlhf best-of-n --policy models/toy --reward rm:models/rm --n 8 --out models/bon",
        "rlhf best-of-n --policy models/toy --reward rule:contains:indeed --n 4 --limit 200 --out models/bon",
    ))(best_of_n)
    app.command("leaderboard", epilog=examples(
        "rlhf leaderboard --generator round-0 --generator round-1 --generator round-2 --judge rm:models/rm",
        "rlhf leaderboard --generator dpo --generator ppo --generator toy --judge gpt4o --out reports/board",
    ))(leaderboard)
    rule_app.command("run", epilog=examples("rlhf rule run indeed --batch b1 --rule contains:indeed"))(rule_run)
    app.add_typer(rule_app, name="rule")
    from pipeline.cli.model_cmds import models_app

    models_app.command("toy", epilog=examples("rlhf models toy models/toy", "rlhf models toy /tmp/toy --epochs 1"))(
        models_toy)
