"""What the search varies and what a trial trains: the space of distillation weights, and
``TuneSpec``, everything a worker needs (picklable, so SLURM tasks get it too)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from study.config import RunConfig

# Search space. lambda_s multiplies the DKD term together with the fixed soft
# factor (8.0), as in the official release.
SPACE = {
    "soft": (0.05, 2.0),
    "attention": (0.01, 1.0),
    "grad": (0.01, 1.0),
    "attention_tau": (0.1, 4.0),
}
HARD_RANGE = (0.25, 2.0)  # only with tune_hard
BASE_ROW = "t7-full"
OFFICIAL_PRESET = "official-distillation"  # variants/base.toml: the weights are written there, once


def official_weights() -> dict:
    """The official release's weights of the searched terms (trial 0), from the base file's preset."""
    from study.variants import preset

    weights = preset(OFFICIAL_PRESET)["distill"]
    return {name: weights[name] for name in SPACE}


@dataclass(frozen=True)
class TuneSpec:
    """Everything a worker needs; picklable, so SLURM tasks get it too."""

    dataset: str
    n_trials: int
    storage: str
    study_name: str
    store_root: str
    profile: str = "paper"
    overrides: dict | None = None
    seed: int = 0
    tune_hard: bool = False
    roots: dict | None = None
    # Median pruner: wait for this many finished trials, and this many epochs in each.
    prune_startup_trials: int = 3
    prune_warmup_epochs: int = 2
    # A RUNNING trial on another host without a heartbeat for this long is taken as dead.
    grace_seconds: float = 1800.0

    def base_config(self) -> RunConfig:
        from study.variants import find_row

        overrides = dict(self.overrides or {})
        overrides["train"] = {**overrides.get("train", {}), "selection": "holdout"}
        return find_row(BASE_ROW).run_config(self.dataset, self.profile, overrides)

    def trial_config(self, params: dict) -> RunConfig:
        base = self.base_config()
        weights = {k: float(v) for k, v in params.items()}
        return replace(base, distill=replace(base.distill, **weights))


def suggest(trial, spec: TuneSpec) -> dict:
    params = {name: trial.suggest_float(name, low, high, log=True) for name, (low, high) in SPACE.items()}
    if spec.tune_hard:
        params["hard"] = trial.suggest_float("hard", *HARD_RANGE, log=True)
    return params
