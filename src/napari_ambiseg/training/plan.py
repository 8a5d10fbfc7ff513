"""Which run to start: the one set of rules for a new run, a fine-tune and a resume, shared by
`ambiseg train` and the training dock.

* resume (asked for, and the folder holds a checkpoint): the run continues with its own model
  (run.json); a model config asked for explicitly that differs is an error. Its recipe is the
  run's own, with the caller's overrides (more iterations, another device...) on top.
* fine-tune (`init` weights, no resume): the model is the one asked for explicitly, else the
  architecture of the weights it starts from (their diffusion and sampling settings too).
* new: the model asked for explicitly, else `new_model` (a dock preset), else the defaults.

The trainer keeps its own guard: it refuses a checkpoint made with another model config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..config import ModelConfig
from ..errors import InputError
from .config import TrainConfig, load_run_config
from .rundir import RunDir

Mode = Literal["new", "fine-tune", "resume"]


@dataclass(frozen=True)
class RunPlan:
    model: ModelConfig
    train: TrainConfig
    out: RunDir
    mode: Mode

    @property
    def resume(self) -> bool:
        return self.mode == "resume"

    def describe(self) -> str:
        if self.mode == "resume":
            return f"resuming the run in {self.out.root}"
        if self.mode == "fine-tune":
            return f"fine-tuning {self.train.init} into {self.out.root}"
        return f"a new run in {self.out.root}"


def _run_configs(run: RunDir) -> tuple[ModelConfig, TrainConfig]:
    """The resumed run's configs: run.json, or (a folder without it) the checkpoint's."""
    if run.run_json.is_file():
        return load_run_config(run.run_json)
    import torch

    ck = torch.load(run.checkpoint, map_location="cpu", weights_only=True)
    return ModelConfig.from_dict(ck["model_config"]), TrainConfig.from_dict(ck["train_config"])


def plan_run(out_dir: str | Path, *, resume: bool, model: ModelConfig | None = None,
             train: TrainConfig | None = None, new_model: ModelConfig | None = None,
             **overrides: Any) -> RunPlan:
    """The run to start in `out_dir` (rules above).

    model: the model config asked for explicitly (`--config`); train: the recipe asked for
    explicitly (else the resumed run's, or the defaults); new_model: the model for a new run
    when none is asked for (the dock's preset); overrides: TrainConfig fields set on top
    (a command line passes only the options given)."""
    run = RunDir(out_dir)
    unknown = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if unknown:
        raise InputError(f"unknown training settings {sorted(unknown)}")
    if resume and run.can_resume():
        run_model, run_train = _run_configs(run)
        if model is not None and model != run_model:
            raise InputError(f"{run.checkpoint} was made with another model config; use a new "
                             f"output folder or the config saved in {run.run_json}")
        recipe = dataclasses.replace(train or run_train, **overrides)
        return RunPlan(run_model, recipe, run, "resume")
    recipe = dataclasses.replace(train or TrainConfig(), **overrides)
    if recipe.init:
        from ..weights_io import load_config, resolve_weights

        chosen = model or load_config(resolve_weights(recipe.init))[0]
        return RunPlan(chosen, recipe, run, "fine-tune")
    return RunPlan(model or new_model or ModelConfig(), recipe, run, "new")
