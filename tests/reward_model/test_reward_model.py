"""Reward models: pairs kept by cutting the context, training on TRL's RewardTrainer (tiny Llama and the real
MiniLM), resume, evaluation and scoring, with their runs. SQLite only: the store plays a small part here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import func, select

from db.models import ResponseScore, Run
from pipeline.errors import UserError
from pipeline.export import ExportOptions, export
from reward_model.data import Encoder, load_pairs, tokenize_pairs
from reward_model.scoring import RewardScorer
from reward_model.stage import run_eval, run_score_store, run_train, score_file
from reward_model.train import RM_CARD, default_config
from tests.conftest import Cli
from tests.helpers import flat, write_jsonl


def test_the_context_is_cut_from_the_left_and_the_response_kept(tiny_lm_dir: Path) -> None:
    from transformers import AutoTokenizer

    from pipeline.offline_models import minilm_path

    for path in (str(minilm_path()), str(tiny_lm_dir)):
        tokenizer = AutoTokenizer.from_pretrained(path)
        encoder = Encoder(tokenizer, 40)
        long_context = [{"role": "user", "content": "early words " * 40 + "the final question?"}]
        ids = encoder.encode(long_context, "the answer")
        text = tokenizer.decode(ids)
        assert len(ids) == 40 and "the answer" in text and "question" in text and encoder.truncated_context == 1
        ids = encoder.encode([{"role": "user", "content": "q"}], "long answer " * 50)
        assert len(ids) <= 40 and encoder.truncated_response == 1
        short = encoder.encode([{"role": "user", "content": "q?"}], "a.")
        assert len(short) < 40 and encoder.truncated_context == 1


def test_no_pair_is_dropped(tiny_lm_dir: Path, store) -> None:  # noqa: ANN001
    from transformers import AutoTokenizer

    _, data, _ = store
    dataset = load_pairs(data, "train")
    tokenized, stats = tokenize_pairs(dataset, AutoTokenizer.from_pretrained(tiny_lm_dir), 24)
    assert len(tokenized) == len(dataset) == stats["pairs"] and stats["truncated_context"] > 0
    assert max(tokenized["length"]) <= 24 and "margin" in tokenized.column_names


def test_train_records_a_run_changes_the_weights_and_resumes(tiny_lm_dir: Path, store, tmp_path: Path) -> None:  # noqa: ANN001
    sessions, data, _ = store
    out = tmp_path / "rm"
    config = default_config(str(out), base_model=str(tiny_lm_dir), max_steps=2, save_steps=2, logging_steps=1,
                            per_device_train_batch_size=4, learning_rate=1e-3)
    report = run_train(sessions, str(data), str(out), config)
    assert report.steps == 2 and report.pairs == len(load_pairs(data, "train")) and report.train_loss > 0
    trained = load_file(out / "model.safetensors")
    base = load_file(tiny_lm_dir / "model.safetensors")
    shared = [k for k in trained if k in base and trained[k].shape == base[k].shape]
    assert shared and any(not torch.equal(trained[k], base[k]) for k in shared)
    card = json.loads((out / "rlhf_rm.json").read_text())
    with sessions() as session:
        run = session.get(Run, card["run_id"])
        export_run = json.loads((data / "export_manifest.json").read_text())["run_id"]
        assert run.kind == "rm" and run.status == "succeeded" and run.inputs == [export_run]
    more = default_config(str(out), base_model=str(tiny_lm_dir), max_steps=4, save_steps=2,
                          per_device_train_batch_size=4, learning_rate=1e-3)
    resumed = run_train(sessions, str(data), str(out), more, resume=True)
    assert resumed.steps == 4  # continued from checkpoint-2 (optimizer, scheduler, RNG, data position)
    state = json.loads((out / "checkpoints" / "checkpoint-4" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e][:2] == [1, 2]


def test_the_real_minilm_trains(store, tmp_path: Path) -> None:  # noqa: ANN001
    sessions, data, _ = store
    config = default_config(str(tmp_path / "mini"), max_steps=2, per_device_train_batch_size=4, max_length=64)
    report = run_train(sessions, str(data), str(tmp_path / "mini"), config)
    assert report.steps == 2 and report.train_loss == report.train_loss  # finite, not NaN


def test_eval_and_score(tiny_lm_dir: Path, store, tmp_path: Path, shared_data: Path) -> None:  # noqa: ANN001
    sessions, data, _ = store
    out = tmp_path / "rm"
    run_train(sessions, str(data), str(out), default_config(str(out), base_model=str(tiny_lm_dir), max_steps=3,
                                                            per_device_train_batch_size=4))
    report, run_id = run_eval(sessions, str(out), str(data), split="test", out=str(tmp_path / "r.html"))
    assert report.pairs == len(load_pairs(data, "test")) and 0 <= report.accuracy <= 1 and 0 <= report.ece <= 1
    assert report.accuracy_ci[0] <= report.accuracy <= report.accuracy_ci[1]
    assert sum(n for _, _, n in report.by_length) == report.pairs and "<img" in (tmp_path / "r.html").read_text()
    with sessions() as session:
        assert session.get(Run, run_id).kind == "rm-eval"
    hh = shared_data / "hh-rlhf-harmless-1800.jsonl.gz"  # any pairs file, not imported
    subset = write_jsonl(tmp_path / "hh.jsonl", [json.loads(line) for line in
                                                 __import__("gzip").open(hh, "rt").readlines()[:20]])
    on_file, _ = run_eval(None, str(out), str(subset))
    assert on_file.pairs == 20
    scorer = RewardScorer(out, batch_size=3)
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(7)]
    answers = [f"answer number {i}" + " more" * i for i in range(7)]
    batched = scorer.score(prompts, answers)
    one_by_one = [scorer.score([p], [a])[0] for p, a in zip(prompts, answers, strict=True)]
    assert batched == pytest.approx(one_by_one, abs=1e-4)
    assert scorer(prompts=prompts, completions=[[{"role": "assistant", "content": a}] for a in answers]) == \
        pytest.approx(batched, abs=1e-4)
    run, count = run_score_store(sessions, str(out), split="train")
    with sessions() as session:
        assert session.scalar(select(func.count(ResponseScore.id)).where(ResponseScore.run_id == run)) == count > 0
    rows = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "hi?", "response": "hello"}])
    assert score_file(str(out), rows, tmp_path / "scored.jsonl") == 1
    assert "reward" in json.loads((tmp_path / "scored.jsonl").read_text())


def test_cli(tiny_lm_dir: Path, store, tmp_path: Path) -> None:  # noqa: ANN001
    _, data, url = store
    cli = Cli(url, tmp_path)
    # the project file's [rm] sits under the command line: its warmup applies, --set and --max-steps override it
    (tmp_path / "rlhf.toml").write_text("[rm]\nwarmup_steps = 0\nhead_lr_multiplier = 3\nmax_steps = 5\n")
    trained = cli("rm", "train", "--data", str(data), "--out", str(tmp_path / "m"), "--set", f"base_model={tiny_lm_dir}",
                  "--max-steps", "2", "--batch-size", "4", "--set", "head_lr_multiplier=2", "--set", "layer_lr_decay=0.9")
    assert "2 steps" in trained.output and "with the context cut" in trained.output
    run_id = json.loads((tmp_path / "m" / RM_CARD).read_text())["run_id"]
    with store[0]() as session:
        config = session.get(Run, run_id).config
    assert (config["head_lr_multiplier"], config["layer_lr_decay"], config["max_steps"]) == (2.0, 0.9, 2)
    assert config["warmup_steps"] == 0  # from rlhf.toml (the default is 0.05)
    assert config["base_model"] == str(tiny_lm_dir)  # --set base_model=... is --base
    assert "given both as an option and with --set" in cli(
        "rm", "train", "--data", str(data), "--out", str(tmp_path / "y"), "--base", str(tiny_lm_dir),
        "--set", "base_model=minilm", expect=1).output
    assert "RMConfig has no option 'head_lr'" in cli("rm", "train", "--data", str(data), "--out", str(tmp_path / "x"),
                                                     "--set", "head_lr=2", expect=1).output
    (tmp_path / "rlhf.toml").write_text("[rm]\nlerning_rate = 1e-4\n")
    assert "rlhf.toml [rm]: no option 'lerning_rate'" in flat(cli("rm", "train", "--data", str(data), "--out",
                                                                   str(tmp_path / "x"), expect=1).output)
    (tmp_path / "rlhf.toml").write_text('[rm]\noutput_dir = "shared"\n')
    assert "rlhf.toml [rm]: output_dir is per run" in flat(cli("rm", "train", "--data", str(data), "--out",
                                                                str(tmp_path / "x"), expect=1).output)
    # a path in the file is relative to the file (run from a subfolder here); --no-lora turns the file's LoRA off
    shutil.copytree(tiny_lm_dir, tmp_path / "models" / "tiny")
    (tmp_path / "rlhf.toml").write_text('[rm]\nbase_model = "models/tiny"\nuse_lora = true\n')
    (tmp_path / "sub").mkdir()
    Cli(url, tmp_path / "sub")("rm", "train", "--data", str(data), "--out", str(tmp_path / "r"), "--max-steps", "1",
                               "--batch-size", "4", "--no-lora")
    run_id = json.loads((tmp_path / "r" / RM_CARD).read_text())["run_id"]
    with store[0]() as session:
        config = session.get(Run, run_id).config
    assert (config["base_model"], config["use_lora"]) == (str(tmp_path / "models" / "tiny"), False)
    (tmp_path / "rlhf.toml").unlink()
    evaluated = flat(cli("rm", "eval", "--model", str(tmp_path / "m"), "--data", str(data)).output)
    test = load_pairs(data, "test")  # the interval counts the test split's prompts, not its pairs
    assert f"on {len(test)} pairs (95% interval over {len(set(test['prompt_id']))} prompts)" in evaluated
    assert "accuracy, shortest quarter (" in evaluated
    assert "responses scored" in cli("rm", "score", "--model", str(tmp_path / "m"), "--split", "test").output
    assert "no such file" in cli("rm", "eval", "--model", str(tmp_path / "m"), "--data", "nope.jsonl",
                                 expect=1).output


def test_an_ensemble_trains_each_member_scores_with_their_mean_and_resumes(tiny_lm_dir: Path, store,  # noqa: ANN001
                                                                        tmp_path: Path) -> None:
    sessions, data, _ = store
    out = tmp_path / "ens"
    config = default_config(str(out), base_model=str(tiny_lm_dir), max_steps=2, save_steps=1, logging_steps=1,
                            per_device_train_batch_size=4, learning_rate=1e-3, ensemble=3)
    report = run_train(sessions, str(data), str(out), config)
    assert report.members == 3 and report.steps == 2 and "3 models x 2 steps" in report.summary()
    card = json.loads((out / "rlhf_rm.json").read_text())
    assert card["members"] == ["member-1", "member-2", "member-3"] and card["run_id"] == report.run_id
    seeds = [json.loads((out / m / "rlhf_rm.json").read_text())["seed"] for m in card["members"]]
    assert seeds == [0, 1, 2]
    heads = [load_file(out / m / "model.safetensors")["score.weight"] for m in card["members"]]
    assert not torch.equal(heads[0], heads[1])  # different seeds, different models

    scorer = RewardScorer(out, batch_size=2)
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]
    answers = [f"answer {i}" + " more" * i for i in range(5)]
    members = scorer.score_members(prompts, answers)
    assert len(members) == 3 and members[0] != members[1]
    alone = RewardScorer(out / "member-2").score(prompts, answers)
    assert members[1] == pytest.approx(alone, abs=1e-4)
    assert scorer.score(prompts, answers) == pytest.approx([sum(v) / 3 for v in zip(*members)], abs=1e-6)
    evaluated, _ = run_eval(None, str(out), str(data))
    assert len(evaluated.member_accuracy) == 3 and evaluated.metrics()["member_accuracy"]

    # the conservative reward for PPO: mean - k * std over the members, lower where they disagree
    from policy.stage import reward_scorer

    conservative, _ = reward_scorer(f"rm:{out}", uncertainty_penalty=2.0)
    spread = [float(torch.tensor(v).std(unbiased=False)) for v in zip(*members)]
    assert conservative(prompts, answers) == pytest.approx(
        [sum(v) / 3 - 2.0 * s for v, s in zip(zip(*members), spread)], abs=1e-5)
    assert all(s > 0 for s in spread)
    with pytest.raises(UserError, match="needs an ensemble"):
        RewardScorer(out / "member-1", uncertainty_penalty=1.0)
    with pytest.raises(UserError, match="needs an ensemble"):
        reward_scorer("rule:contains:yes", uncertainty_penalty=1.0)
    from policy.grpo import reward_functions  # GRPO/RLOO: the same conservative reward, through TRL's signature

    rm_reward, rule = reward_functions([f"rm:{out}", "rule:contains:more"], uncertainty_penalty=2.0)
    assert rm_reward(prompts=prompts, completions=answers) == pytest.approx(conservative(prompts, answers), abs=1e-6)
    with pytest.raises(UserError, match="needs an ensemble"):
        reward_functions(["rule:contains:more"], uncertainty_penalty=1.0)
    with pytest.raises(UserError, match="needs an ensemble"):
        reward_functions([f"rm:{out / 'member-1'}"], uncertainty_penalty=1.0)

    # interrupted in the third member after its first checkpoint: the first two stay, the third continues
    first = (out / "member-1" / "model.safetensors").stat().st_mtime_ns
    checkpoint = out / "member-3" / "checkpoints" / "checkpoint-1" / "trainer_state.json"
    saved = checkpoint.stat().st_mtime_ns
    (out / "member-3" / "rlhf_rm.json").unlink()
    (out / "member-3" / "model.safetensors").unlink()
    shutil.rmtree(out / "member-3" / "checkpoints" / "checkpoint-2")
    resumed = run_train(sessions, str(data), str(out), config, resume=True)
    assert resumed.members == 3 and (out / "member-1" / "model.safetensors").stat().st_mtime_ns == first
    assert checkpoint.stat().st_mtime_ns == saved  # continued from checkpoint-1, which a fresh start rewrites
    state = json.loads((out / "member-3" / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2]
    assert json.loads((out / "member-3" / "rlhf_rm.json").read_text())["seed"] == 2


def test_the_new_head_and_each_layer_learn_at_their_own_rates(tiny_lm_dir: Path, store,  # noqa: ANN001
                                                                  tmp_path: Path) -> None:
    from reward_model.train import LengthGroupedRewardTrainer, head_parameters, load_model

    _, data, _ = store
    config = default_config(str(tmp_path / "h"), base_model=str(tiny_lm_dir), learning_rate=1e-4,
                            head_lr_multiplier=20, layer_lr_decay=0.5)
    model, tokenizer = load_model(str(tiny_lm_dir), config)
    dataset, _ = tokenize_pairs(load_pairs(data, "train"), tokenizer, 32)
    trainer = LengthGroupedRewardTrainer(model=model, args=config, train_dataset=dataset.remove_columns(["length"]),
                                         processing_class=tokenizer)
    optimizer = trainer.create_optimizer()
    assert {id(p) for p in head_parameters(model)} == {id(model.score.weight)}
    rates = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    assert len(rates) == sum(1 for p in model.parameters() if p.requires_grad)  # every weight in exactly one group
    layers = model.config.num_hidden_layers
    assert rates[id(model.score.weight)] == pytest.approx(2e-3)
    assert rates[id(model.model.layers[-1].mlp.up_proj.weight)] == pytest.approx(1e-4)  # the top layer: the rate
    assert rates[id(model.model.layers[0].mlp.up_proj.weight)] == pytest.approx(1e-4 * 0.5 ** (layers - 1))
    assert rates[id(model.model.embed_tokens.weight)] == pytest.approx(1e-4 * 0.5**layers)
    assert rates[id(model.model.norm.weight)] == pytest.approx(1e-4)
    weight_decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert weight_decay[id(model.model.norm.weight)] == 0.0 and weight_decay[id(model.score.weight)] > 0


def test_tie_records_are_not_learnt_or_scored_as_preferences(tiny_lm_dir: Path, store, tmp_path: Path,  # noqa: ANN001
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`rlhf export --ties` writes a tie with chosen/rejected in id order: the RM's trainer and its evaluation, and
    DPO without soft labels, leave ties out (and say so); DPO with soft labels learns them as a target of 0.5."""
    from db.annotators import get_or_create_import_annotator
    from db.comparisons import NewRanking, add_rankings_if_absent
    from db.models import Comparison, Response
    from policy.dpo import default_config as dpo_config
    from policy.dpo import train_dpo
    from reward_model.data import without_ties

    sessions, _, _ = store
    with sessions.begin() as session:  # "best" above the other two, which it calls equal
        tied = get_or_create_import_annotator(session, "tied")
        rankings = []
        for comparison in session.scalars(select(Comparison)):
            generators = dict(session.execute(select(Response.id, Response.generator)
                                              .where(Response.id.in_(comparison.response_ids))).all())
            rankings.append(NewRanking(comparison.id, tied.id,
                                       {r: 1 if generators[r] == "best" else 2 for r in comparison.response_ids}))
        add_rankings_if_absent(session, rankings)
    data = tmp_path / "with-ties"
    export(sessions, ExportOptions(out_dir=str(data), include=("import:tied",), ties=True))
    train, test = load_pairs(data, "train"), load_pairs(data, "test")
    ties = sum(train["tie"])
    assert ties and len(train) == 3 * ties  # per comparison: best > mid, best > worst, mid = worst
    kept, dropped = without_ties(train)
    assert dropped == ties and len(kept) == 2 * ties and not any(kept["tie"])

    config = default_config(str(tmp_path / "rm"), base_model=str(tiny_lm_dir), max_steps=1,
                            per_device_train_batch_size=4)
    trained = run_train(sessions, str(data), str(tmp_path / "rm"), config)
    assert (trained.pairs, trained.ties_left_out) == (2 * ties, ties) and f"{ties} ties left out" in trained.summary()
    scored, _ = run_eval(None, str(tmp_path / "rm"), str(data))
    assert (scored.pairs, scored.ties_left_out) == (len(test) * 2 // 3, len(test) // 3)

    monkeypatch.setenv("RLHF_CACHE_DIR", str(tmp_path / "cache"))
    options = {"policy": str(tiny_lm_dir), "max_steps": 1, "per_device_train_batch_size": 8, "disable_tqdm": True}
    hard = train_dpo(data, tmp_path / "hard", dpo_config(tmp_path / "hard", soft_labels=False, **options))
    assert (hard.pairs, hard.ties_left_out, hard.soft_labels) == (2 * ties, ties, False)
    soft = train_dpo(data, tmp_path / "soft", dpo_config(tmp_path / "soft", **options))
    assert (soft.pairs, soft.ties_left_out, soft.soft_labels) == (3 * ties, 0, True)  # ties at 0.5
