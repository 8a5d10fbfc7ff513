"""The run planner shared by `ambiseg train` and the training dock: new run, fine-tune,
resume (the run's own model and recipe, overrides on top) and a model-config mismatch."""

from __future__ import annotations

import pytest
import torch

from napari_ambiseg import cli
from napari_ambiseg.config import ModelConfig
from napari_ambiseg.errors import InputError
from napari_ambiseg.testing import save_tiny_weights, tiny_config
from napari_ambiseg.training.config import TrainConfig, save_run_config
from napari_ambiseg.training.plan import plan_run


def a_run(out, model=None, recipe=None):
    """A run folder as the trainer leaves it: run.json and a checkpoint."""
    out.mkdir(parents=True)
    model = model or tiny_config(steps=7)
    recipe = recipe or TrainConfig(data="cases", warmup=3, iterations=10, seed=5)
    save_run_config(model, recipe, out / "run.json")
    torch.save({"model_config": model.to_dict(), "train_config": recipe.to_dict()},
               out / "checkpoint.pt")
    return model, recipe


def test_new_run_takes_the_given_model_or_the_preset_or_the_defaults(tmp_path):
    plan = plan_run(tmp_path / "run", resume=True, new_model=tiny_config(), data="d.npz",
                    iterations=5)
    assert plan.mode == "new" and not plan.resume  # nothing to resume: a new run
    assert plan.model == tiny_config()
    assert plan.train == TrainConfig(data="d.npz", iterations=5)
    assert plan.out.checkpoint == tmp_path / "run" / "checkpoint.pt"
    assert plan_run(tmp_path / "run", resume=False).model == ModelConfig()
    given = tiny_config(steps=3)
    assert plan_run(tmp_path / "run", resume=False, model=given,
                    new_model=tiny_config()).model == given


def test_fine_tune_takes_the_architecture_of_its_weights(tmp_path):
    weights = save_tiny_weights(tmp_path / "w.safetensors")
    plan = plan_run(tmp_path / "run", resume=False, init=str(weights),
                    new_model=ModelConfig())
    assert plan.mode == "fine-tune" and plan.train.init == str(weights)
    assert plan.model == tiny_config()
    # a model asked for explicitly wins (its network must fit: the trainer checks)
    mine = tiny_config(sampler="ddim", steps=4)
    assert plan_run(tmp_path / "run", resume=False, init=str(weights), model=mine).model == mine


def test_resume_continues_the_runs_own_model_and_recipe(tmp_path):
    model, recipe = a_run(tmp_path / "run")
    plan = plan_run(tmp_path / "run", resume=True, new_model=ModelConfig(), iterations=20,
                    init="bundled")
    assert plan.mode == "resume" and plan.resume
    assert plan.model == model                      # not the preset
    assert (plan.train.data, plan.train.warmup, plan.train.seed) == ("cases", 3, 5)
    assert plan.train.iterations == 20              # the override on top
    # without resume the folder starts afresh with what was asked for
    assert plan_run(tmp_path / "run", resume=False, new_model=ModelConfig()).mode == "new"
    # a folder without run.json: the checkpoint's own configs
    (tmp_path / "run" / "run.json").unlink()
    assert plan_run(tmp_path / "run", resume=True).model == model


def test_resume_with_another_model_config_is_refused(tmp_path):
    model, _ = a_run(tmp_path / "run")
    assert plan_run(tmp_path / "run", resume=True, model=model).mode == "resume"
    with pytest.raises(InputError, match="another model config"):
        plan_run(tmp_path / "run", resume=True, model=tiny_config())
    with pytest.raises(InputError, match="unknown training settings"):
        plan_run(tmp_path / "run", resume=True, iteratons=3)


def test_the_cli_trains_what_the_planner_plans(tmp_path, monkeypatch, capsys):
    import napari_ambiseg.training.trainer as trainer

    model, _ = a_run(tmp_path / "run")
    calls = []
    monkeypatch.setattr(trainer, "train", lambda *a, **kw: calls.append((a, kw)))
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--resume",
                     "--iterations", "30"]) == 0
    (model_cfg, train_cfg, out), kw = calls[0]
    assert model_cfg == model and train_cfg.iterations == 30 and train_cfg.warmup == 3
    assert out == tmp_path / "run" and kw["resume"] is True
    assert "resuming the run" in capsys.readouterr().out
