"""A run's resolved configuration: frozen dataclasses, and the hash that is its identity.

A run = (RunConfig, seed). The config hash covers everything that changes a
result (model, data, training, distillation) and nothing that does not (where
the data lives, thread counts, which table row asked for it), so two rows with
the same resolved config share their runs.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace

from study.canonical import check_fields, coerce_floats
from study.datasets import SYNTHETIC_GENERATOR_VERSION as SYNTHETIC_GENERATOR
from study.datasets import known_datasets
from study.errors import ConfigError

# The allowed values of the config's choices, owned here: importing the config imports no torch
# (the modules that act on these choices import them from here). What each value means is said
# at the field that takes it.
NORMALIZATIONS = ("official", "unit")
ROTATIONS = ("per_sample", "per_run", "none")  # the official code draws one angle per run
ROTATION_FRAMES = ("working", "original")
NORMALIZE_FRAMES = ("working", "original")
BCE_INPUTS = ("logits", "probabilities")
MASK_TARGETS = ("hard", "soft")
PIPELINES = ("batched", "per_sample")
ENGINES = ("fast", "plain")
SELECTIONS = ("paper", "last", "holdout")
DISTILL_SELECTIONS = ("as_train", "train_loss")
SECTIONS = ("model", "data", "train", "distill")
DATA_SPLITS = ("random", "release")
# Fields added after runs were first stored: while at these values they are left out of a
# config's identity, so every run stored before they existed keeps its hash.
LATER_FIELDS = {("data", "split"): "random", ("data", "skip_bad"): False, ("data", "pipeline"): "per_sample",
                ("train", "engine"): "plain",
                # the switches between the paper's text and the authors' release (paper/differences.toml)
                ("model", "bidirectional_flip"): "sequence", ("model", "mamba_conv_init"): "harness",
                ("data", "rotation_frame"): "working", ("data", "mask_targets"): "hard",
                ("distill", "selection"): "as_train", ("distill", "drop_last"): False,
                ("data", "normalize_frame"): "working", ("train", "bce_input"): "logits",
                ("train", "deterministic"): True}


def _choice(section: str, name: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{section}.{name}: {value!r} is not allowed; allowed values: {', '.join(allowed)}")


def _positive(section: str, name: str, value, kind=(int,)) -> None:
    if isinstance(value, bool) or not isinstance(value, kind) or value <= 0:
        raise ConfigError(f"{section}.{name}: expected a positive number, got {value!r}")


def _number_in(section: str, name: str, value, low, high, open_high: bool = False) -> None:
    """``low <= value <= high`` (or ``< high``); None for no upper bound."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and value >= low
    if ok and high is not None:
        ok = value < high if open_high else value <= high
    if not ok:
        upper = "" if high is None else (f" and below {high}" if open_high else f" and at most {high}")
        raise ConfigError(f"{section}.{name}: expected a number of at least {low}{upper}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "isic2017"
    size: int = 256
    split_seed: int = 0
    train_fraction: float = 0.7
    # Fraction of the TRAINING ids held out for selection = holdout (and the search).
    holdout_fraction: float = 0.1
    normalization: str = "official"
    hflip: bool = True
    vflip: bool = True
    rotation: str = "per_sample"
    # Evaluated after training with the selected checkpoint (PH2 for Table 1).
    external: tuple[str, ...] = ()
    synthetic_count: int = 200
    synthetic_seed: int = 0
    # Part of a run's identity: a new generator makes new runs, never reuses old ones.
    synthetic_generator: int = SYNTHETIC_GENERATOR
    # "random": the paper's 7:3 split of the pooled images; "release": the release's own
    # Training / Validation / Test folders (Validation is the test part where Test is absent).
    split: str = "random"
    # Leave out (and record) image/mask pairs that do not decode, instead of failing.
    skip_bad: bool = False
    # "batched": the split resident as uint8 tensors, augmented a batch at a time on the
    # run's device; "per_sample": the earlier per-sample path (its own random stream).
    pipeline: str = "batched"
    # Between the paper's text and the authors' release (paper/differences.toml). Where a rotation
    # happens: "working" (in the resized square frame) or "original" (in the image's own aspect ratio:
    # the release rotates at full size and then squashes to 256 x 256, so on a non-square image its
    # rotation is also a shear in the network's frame). What a training mask is: "hard" {0, 1}
    # (resized, then thresholded at 128) or "soft" in [0, 1] (resized bilinearly and used as is, as
    # the release does for its training and test losses); every metric counts masks thresholded at
    # 0.5, the same pixels either way.
    rotation_frame: str = "working"
    mask_targets: str = "hard"
    # Where the official normalisation's per-image min and max are taken: "working" (of the image
    # resized to data.size, as the harness caches it) or "original" (of the image at its stored
    # resolution, before resizing: the release normalises first and resizes last).
    normalize_frame: str = "working"

    def __post_init__(self):
        if isinstance(self.external, list):
            object.__setattr__(self, "external", tuple(self.external))
        coerce_floats(self)
        known = tuple(known_datasets())  # read once for the dataset and every external set
        _choice("data", "dataset", self.dataset, known)
        _positive("data", "size", self.size)
        if self.size % 32:
            raise ConfigError(f"data.size: {self.size} must be a multiple of 32 (five 2x poolings)")
        for name in ("train_fraction", "holdout_fraction"):
            value = getattr(self, name)
            if not 0 < value < 1:
                raise ConfigError(f"data.{name}: expected a fraction in (0, 1), got {value!r}")
        _choice("data", "normalization", self.normalization, NORMALIZATIONS)
        _choice("data", "split", self.split, DATA_SPLITS)
        _choice("data", "pipeline", self.pipeline, PIPELINES)
        if not isinstance(self.skip_bad, bool):
            raise ConfigError(f"data.skip_bad: expected true or false, got {self.skip_bad!r}")
        _choice("data", "rotation", self.rotation, ROTATIONS)
        _choice("data", "rotation_frame", self.rotation_frame, ROTATION_FRAMES)
        _choice("data", "mask_targets", self.mask_targets, MASK_TARGETS)
        _choice("data", "normalize_frame", self.normalize_frame, NORMALIZE_FRAMES)
        for ext in self.external:
            _choice("data", "external", ext, known)
        _positive("data", "synthetic_count", self.synthetic_count)
        for name in ("split_seed", "synthetic_seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"data.{name}: expected a non-negative integer, got {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-2
    # CosineAnnealingLR stepped once per epoch: with 300 epochs and T_max 50 the
    # rate oscillates with a 100-epoch period, exactly as the official code does.
    t_max: int = 50
    eta_min: float = 1e-5
    selection: str = "paper"
    # "fast": channels_last, batched Mamba branches, foreach/fused AdamW; "plain": the
    # straightforward eager path (study.train.engine). Same function, other rounding.
    engine: str = "fast"
    # The BCE term of Eq. 18 (training, and the per-image loss that selects a checkpoint): "logits"
    # (BCE with logits, which keeps a gradient at any logit) or "probabilities" (the release's
    # nn.BCELoss on sigmoid outputs, whose log PyTorch clamps at -100: a pixel whose sigmoid
    # rounds to 1 in float32 gives no gradient).
    bce_input: str = "logits"
    # Deterministic algorithms where PyTorch has them, cuDNN's autotuner off (study.train.numerics):
    # a CPU run repeats bit for bit, a CUDA run nearly so. False trades that for speed on a GPU
    # (cuDNN picks its fastest algorithms, which may differ from call to call); it is part of the
    # run's identity, so the two never mix in one cell.
    deterministic: bool = True

    def __post_init__(self):
        if isinstance(self.betas, list):
            object.__setattr__(self, "betas", tuple(self.betas))
        coerce_floats(self)
        for name in ("epochs", "batch_size", "t_max"):
            _positive("train", name, getattr(self, name))
        for name in ("lr", "eps"):
            _positive("train", name, getattr(self, name), (int, float))
        _choice("train", "selection", self.selection, SELECTIONS)
        _choice("train", "engine", self.engine, ENGINES)
        _choice("train", "bce_input", self.bce_input, BCE_INPUTS)
        if not isinstance(self.deterministic, bool):
            raise ConfigError(f"train.deterministic: expected true or false, got {self.deterministic!r}")
        _number_in("train", "weight_decay", self.weight_decay, 0, None)
        _number_in("train", "eta_min", self.eta_min, 0, self.lr)
        if len(self.betas) != 2:
            raise ConfigError(f"train.betas: expected two numbers, got {list(self.betas)!r}")
        for i, beta in enumerate(self.betas):
            _number_in("train", f"betas[{i}]", beta, 0, 1, open_high=True)


@dataclass(frozen=True)
class DistillConfig:
    """Weights of Eq. 12's terms (+ the conventional KL of Table 7's "KL-Distill").

    All zero but ``hard`` means no distillation. Defaults of the settings are
    the official release's: soft factor 8.0, tau_a 0.5.
    """

    hard: float = 1.0
    soft: float = 0.0  # DKD, Eq. 14, multiplied by soft_factor
    soft_factor: float = 8.0
    kl: float = 0.0
    # The official release's `temperature` argument (3.0) is never used there;
    # conventional KL needs one, so it gets that value.
    kl_temperature: float = 3.0
    attention: float = 0.0  # Eqs. 15-16
    attention_tau: float = 0.5
    grad: float = 0.0  # Eq. 17
    # The teacher's model options (default: the full UltraLBM-UNet).
    teacher: dict = field(default_factory=dict)
    # How a student's checkpoint is chosen: "as_train" (train.selection, as for any run) or
    # "train_loss" (lowest training distillation loss: the release's train_distillation.py).
    selection: str = "as_train"
    # Drop a last incomplete training batch (the release's distillation loader does).
    drop_last: bool = False

    def __post_init__(self):
        coerce_floats(self)
        _choice("distill", "selection", self.selection, DISTILL_SELECTIONS)
        if not isinstance(self.drop_last, bool):
            raise ConfigError(f"distill.drop_last: expected true or false, got {self.drop_last!r}")
        for f in fields(self):
            if f.name not in ("teacher", "selection", "drop_last"):
                value = getattr(self, f.name)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    raise ConfigError(f"distill.{f.name}: expected a non-negative number, got {value!r}")
        for name in ("kl_temperature", "attention_tau"):
            _positive("distill", name, getattr(self, name), (int, float))

    @property
    def enabled(self) -> bool:
        return any(getattr(self, t) > 0 for t in ("soft", "kl", "attention", "grad"))

    def __hash__(self):
        return hash(json.dumps(asdict(self), sort_keys=True))


@dataclass(frozen=True)
class RunConfig:
    arch: str
    model: object  # the frozen config dataclass of ``arch``
    data: DataConfig
    train: TrainConfig
    distill: DistillConfig

    def to_dict(self) -> dict:
        """JSON-native (lists, not tuples): what the record stores and the hash covers."""
        return json.loads(json.dumps({
            "model": {"arch": self.arch, **asdict(self.model)},
            "data": asdict(self.data),
            "train": asdict(self.train),
            "distill": asdict(self.distill) if self.distill.enabled else None,
        }))

    @property
    def selects_on_train_loss(self) -> bool:
        """A distillation student chosen by its lowest training loss (``distill.selection``)."""
        return self.distill.enabled and self.distill.selection == "train_loss"

    @property
    def drops_last_batch(self) -> bool:
        """A distillation student whose last incomplete batch is dropped (``distill.drop_last``)."""
        return self.distill.enabled and self.distill.drop_last

    @property
    def selection_mode(self) -> str:
        """How the checkpoint is chosen, in the words a record keeps."""
        return "train_loss" if self.selects_on_train_loss else self.train.selection

    def identity(self) -> dict:
        """What the hash covers: ``to_dict()`` less later fields at their old behaviour."""
        resolved = self.to_dict()
        for (section, name), value in LATER_FIELDS.items():
            if resolved[section] is not None and resolved[section].get(name) == value:
                del resolved[section][name]
        return resolved

    @property
    def hash(self) -> str:
        return config_hash(self.identity())

    def build_model(self):
        """A new model of this config (the one way a run's model is made)."""
        from study.models import build_model

        options = {k: v for k, v in self.to_dict()["model"].items() if k != "arch"}
        return build_model(self.arch, options)

    def teacher_config(self) -> "RunConfig":
        """The teacher run: the full model, same data and training, no distillation."""
        from study.models.registry import make_config

        teacher_model = make_config("ultralbm", dict(self.distill.teacher))
        return replace(self, arch="ultralbm", model=teacher_model, distill=DistillConfig())

    @classmethod
    def from_dict(cls, resolved: dict) -> "RunConfig":
        """Build and validate from {model: {arch, ...}, data: {...}, train: {...}, distill: {...}}."""
        from study.models.registry import make_config  # the model configs come with the models
        unknown = sorted(set(resolved) - set(SECTIONS))
        if unknown:
            raise ConfigError(f"unknown config section(s) {', '.join(map(repr, unknown))}; "
                              f"sections: {', '.join(SECTIONS)}")
        for name in SECTIONS:
            if not isinstance(resolved.get(name) or {}, dict):
                raise ConfigError(f"config section {name!r}: expected a table of fields")
        model = dict(resolved.get("model") or {})
        arch = model.pop("arch", "ultralbm")
        sections = {"data": DataConfig, "train": TrainConfig, "distill": DistillConfig}
        built = {}
        for name, klass in sections.items():
            options = dict(resolved.get(name) or {})
            check_fields(klass, name, options)
            built[name] = klass(**options)
        return cls(arch, make_config(arch, model), built["data"], built["train"], built["distill"])


def config_hash(resolved: dict) -> str:
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def merge(base: dict, override: dict) -> dict:
    """Section-wise merge of nested dicts (a row or profile overrides the base)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["train.epochs=3", "data.size=64"]`` -> nested dict; values are TOML literals or strings."""
    out: dict = {}
    for item in items:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"override {item!r}: expected SECTION.FIELD=VALUE, e.g. train.epochs=3")
        key, raw = item.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
