"""The typed, validated view of params.yaml: the one place that knows keys and defaults.

Every group is a pydantic model with `extra="forbid"`, so a typo in params.yaml is an error that
names the key instead of a silently ignored setting. `load_params` turns the first validation
problem into a `NetgeomError` whose key is the dotted params path (e.g. `noise.label`).
"""

from __future__ import annotations

import types
from functools import cache
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from netgeom.errors import NetgeomError


# Every seed: numpy's and scikit-learn's generators refuse a negative one (and sklearn one above
# 2**32 - 1) with a traceback deep inside a stage; refused here in one line instead.
SEED_MAX = 2**32 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Width = Annotated[int, Field(ge=1)]


def _takes_only_numbers(annotation) -> bool:
    """int or float (Optional, Annotated, or the items of a list/tuple), and nothing a YAML
    boolean could mean: no bool, str or Literal among the alternatives."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _takes_only_numbers(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return bool(options) and all(_takes_only_numbers(a) for a in options)
    if origin in (list, tuple):
        items = [a for a in get_args(annotation) if a is not Ellipsis]
        return bool(items) and all(_takes_only_numbers(a) for a in items)
    if origin is dict:  # the values (mli.lr: {sgd: 0.1})
        return _takes_only_numbers(get_args(annotation)[1])
    return annotation in (int, float)


def _has_bool(value) -> bool:
    if isinstance(value, dict):
        return any(_has_bool(v) for v in value.values())
    return isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value))


class Group(BaseModel):
    # inf and nan are never meaningful settings (`train.lr: inf` trains nothing, silently).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # Fields added after runs existed: at their default they leave a run's identity as it was
    # (runs.identity_hash), so adding an option does not retrain every finished run.
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset()

    def identity_fields(self) -> set[str]:
        """The fields whose value can change a result (all, unless a group says otherwise)."""
        return set(type(self).model_fields)

    def identity_dump(self) -> dict:
        """model_dump(mode="json") of the identity fields, without the LATER_FIELDS that hold
        their defaults (nested too)."""
        out, counted = {}, self.identity_fields()
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if name not in counted:
                continue
            if name in self.LATER_FIELDS and value == field.get_default(call_default_factory=True):
                continue
            out[name] = value.identity_dump() if isinstance(value, Group) else self.model_dump(mode="json", include={name})[name]
        return out

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, raw):
        # pydantic reads true as 1 and false as 0, and YAML reads yes/no/on/off as booleans, so
        # `train.epochs: yes` would train one epoch without a word.
        if isinstance(raw, dict):
            for name, field in cls.model_fields.items():
                if name in raw and _has_bool(raw[name]) and _takes_only_numbers(field.annotation):
                    what = "a list of numbers" if isinstance(raw[name], (list, tuple)) else "numbers" if isinstance(raw[name], dict) else "a number"
                    raise NetgeomError(name, f"must be {what}, got {raw[name]!r} (YAML reads true/false/yes/no/on/off as booleans)")
        return raw


class StudyGroup(Group):
    """A study's params group: every study can be switched off (its stage then records that it
    was skipped), e.g. regions for a max-pool net, which the exact walk cannot handle."""

    enabled: bool = True


class RandomDataParams(Group):
    """The synthetic `random` dataset (used for off-manifold ablations and smoke tests)."""

    kind: Literal["uniform", "gaussian", "hypersphere"] = "uniform"
    shape: tuple[int, ...] = (1, 40)
    classes: int = Field(10, ge=2)
    train_size: int = Field(1000, ge=1)
    test_size: int = Field(200, ge=1)
    seed: Seed = 0


class DataParams(Group):
    name: str = "mnist1d"
    root: str = "data"
    val_size: float = Field(0.1, ge=0, description="fraction (< 1) or count (>= 1) of the training pool")
    train_size: int | None = Field(None, ge=1, description="optional cap on the training subset")
    stratified: bool = True
    split_seed: Seed = 0
    classes: int | None = Field(None, ge=2, description="keep this many classes (class subsampling)")
    class_seed: Seed = 0
    random: RandomDataParams = RandomDataParams()
    normalize: bool = Field(True, description="false: raw pixel values in [0, 1] (the hyperplane seed's --unnormalize)")
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset({"normalize"})

    def identity_fields(self) -> set[str]:
        # The data's content joins a run's identity by its digest: where it lies (root) does not
        # change the weights, nor do the synthetic set's settings when another dataset is used.
        return set(type(self).model_fields) - {"root"} - (set() if self.name == "random" else {"random"})

    @field_validator("val_size")
    @classmethod
    def _count_is_whole(cls, v: float) -> float:
        if v >= 1 and v != int(v):
            raise ValueError("a count (>= 1) must be a whole number; use a value below 1 for a fraction")
        return v


class NoiseParams(Group):
    kind: Literal["none", "symmetric", "uniform", "asymmetric"] = "symmetric"
    label: float = Field(0.0, ge=0, le=1, description="fraction of corrupted training labels")
    seed: Seed = 0
    input: Literal["none", "pixel_shuffle", "random_pixels"] = "none"
    per_image: bool = False
    input_splits: Literal["train", "all"] = Field(
        "train", description="train: the training inputs only (the hyperplanes seed); all: val and test too (Zhang et al.'s shuffled pixels)"
    )
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset({"input_splits"})


class ModelParams(Group):
    arch: str = "mlp"
    width: int | None = Field(64, gt=0, description="null for families with a fixed width")
    # None means "the family's own default" (e.g. BN on for ResNets, off for VGGs).
    depth: int | None = Field(None, ge=1)
    batch_norm: bool | None = None
    activation: Literal["relu", "tanh", "sigmoid", "identity"] | None = "relu"  # None: a family without the option
    init: Literal["pytorch", "kaiming", "fixup"] | None = None
    pretrained: str | None = None
    bottleneck: int | None = Field(None, gt=0, description="mlp: a linear layer of this many units between consecutive hidden layers")
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset({"bottleneck"})

    def identity_fields(self) -> set[str]:
        return set(type(self).model_fields) - {"pretrained"}  # the file counts by its content (runs.identity_hash)

    @model_validator(mode="after")
    def _bottleneck_between_hidden_layers(self) -> ModelParams:
        if self.bottleneck is not None and self.depth is not None and self.depth < 2:
            raise NetgeomError("bottleneck", f"sits between consecutive hidden layers: needs model.depth >= 2, got {self.depth}")
        return self

    def options(self) -> dict[str, Any]:
        """Builder keyword arguments (the registry passes each family only what it accepts)."""
        return self.model_dump(exclude={"arch"}, exclude_none=True)


class CheckpointParams(Group):
    init: bool = True
    # Not in params.yaml: every study reads the final weights, so it is always saved. Still accepted
    # (true only) so that older params files validate, and part of the run identity as before.
    final: bool = Field(True, description="always true: every study reads the final weights")
    epochs: list[int] = Field(default_factory=list, description="explicit checkpoint epochs")
    every: int | None = Field(None, ge=1, description="also checkpoint every E epochs")
    all_until: int | None = Field(None, ge=1, description="also checkpoint every epoch up to this one (the seed's --snapshot-all-until)")
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset({"all_until"})


class TrainParams(Group):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "step", "multistep", "cosine"] = "constant"
    step_size: int = Field(30, ge=1)
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    warmup_start_lr: float = Field(0.0, ge=0)
    augment: bool = False
    eval_every: int = Field(1, ge=1)
    eval_batch_size: int = Field(1000, ge=1)
    stop_loss: float | None = Field(None, ge=0, description="stop once train loss <= this")
    stop_accuracy: float | None = Field(None, ge=0, le=1, description="stop once train accuracy >= this")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="bf16: autocast forward passes; weights and checkpoints stay fp32")
    memory_format: Literal["auto", "channels_last", "contiguous"] = Field(
        "auto", description="auto: channels-last for conv nets on images (faster on CPU); same values up to rounding"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing (the starlight seed's option)")
    grad_clip_norm: float | None = Field(None, gt=0, description="clip the gradient's global L2 norm to this before each step")
    kill_plateaus_within: int | None = Field(
        None, ge=1, description="stop when the validation accuracy repeats between two evaluations within the first N epochs (the seed's --kill-plateaus: 10)"
    )
    fused_optimizer: bool = Field(
        False, description="the optimiser's fused kernel: on the CPU Adam's update 3.5x faster, the weights not bit-identical to the default's (~1e-8)"
    )
    checkpoints: CheckpointParams = CheckpointParams()
    LATER_FIELDS: ClassVar[frozenset[str]] = frozenset({"label_smoothing", "grad_clip_norm", "kill_plateaus_within", "fused_optimizer"})

    @field_validator("checkpoints")
    @classmethod
    def _final_is_kept(cls, v: CheckpointParams) -> CheckpointParams:
        if not v.final:
            raise NetgeomError("final", "must be true: every study reads the final checkpoint")
        return v

    @model_validator(mode="after")
    def _checkpoints_within_training(self) -> TrainParams:
        late = [e for e in self.checkpoints.epochs if e > self.epochs or e < 0]
        if late:
            raise NetgeomError(
                "checkpoints.epochs", f"epochs {late} are outside 0..train.epochs ({self.epochs})"
            )
        if self.warmup_epochs > self.epochs:
            raise NetgeomError("warmup_epochs", f"must be at most train.epochs ({self.epochs})")
        return self


class GridParams(Group):
    widths: list[Width] = Field(default_factory=lambda: [64], min_length=1)
    noise: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    seed_offsets: list[Seed] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("widths")
    @classmethod
    def _distinct_widths(cls, v: list[int]) -> list[int]:
        return _distinct(v)

    @field_validator("noise", mode="before")
    @classmethod
    def _noise_written_as_decimals(cls, v):
        # DVC names folders after the YAML literal (`0` renders as n0, `0.0` as n0.0).
        if isinstance(v, list) and any(isinstance(p, int) for p in v):
            raise ValueError("write noise levels as decimals, e.g. 0.0 rather than 0")
        return v

    @field_validator("noise")
    @classmethod
    def _noise_in_unit_interval(cls, v: list[float]) -> list[float]:
        if any(not 0 <= p <= 1 for p in v):
            raise ValueError("every noise level must lie within [0, 1]")
        return _distinct(v)

    @field_validator("seed_offsets")
    @classmethod
    def _distinct_offsets(cls, v: list[int]) -> list[int]:
        return _distinct(v)


def _distinct(values: list) -> list:
    """Grid axes name DVC stages and run folders: a repeated value would train one cell twice."""
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"values must be distinct; repeated: {repeated}")
    return values


class MlflowParams(Group):
    enabled: bool = True
    experiment: str = "netgeom"
    # MLflow 3.17's runs table shows models only for the 50 newest logged models, so one model
    # per run keeps every run's Models column filled; the other checkpoints become run artifacts.
    log_models: Literal["final", "all", "none"] = "final"


def checkpoint_epochs(p: TrainParams) -> list[int]:
    """The scheduled checkpoint epochs: init (0), listed epochs, every E, final."""
    epochs = set(p.checkpoints.epochs)
    if p.checkpoints.init:
        epochs.add(0)
    if p.checkpoints.every:
        epochs.update(range(p.checkpoints.every, p.epochs + 1, p.checkpoints.every))
    if p.checkpoints.all_until:
        epochs.update(range(1, min(p.checkpoints.all_until, p.epochs) + 1))
    if p.checkpoints.final:
        epochs.add(p.epochs)
    return sorted(epochs)


class ExecutionParams(Group):
    backend: Literal["local", "ray"] = "local"
    workers: int = Field(1, ge=1)
    threads: int = Field(1, ge=1, description="torch threads per process (1 is fastest for small models)")
    address: str | None = Field(None, pattern=r"^\S+$", description="the Ray cluster (host:port, ray://host:port, auto)")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto = the first GPU if one is visible, else cpu")
    deterministic: bool = Field(False, description="deterministic kernels (bit-exact GPU reruns, slower)")


# The execution settings that change a training's or a study's numbers (DVC params of those
# stages): the device kind, the deterministic kernels and the CPU's thread count (a matmul splits
# its sums by thread). Workers, backend and address only place the work.
EXECUTION_PARAMS = ("execution.device", "execution.deterministic", "execution.threads")


def execution_identity(execution: ExecutionParams, device: str) -> dict:
    """What of EXECUTION_PARAMS joins a result's identity on `device` (the kind resolved, cpu or
    cuda): the thread count only on the CPU and away from its default 1, so a result made with
    one thread keeps the identity it had before threads counted."""
    threads = execution.threads
    return {"device": device, "deterministic": execution.deterministic, **({"threads": threads} if device == "cpu" and threads != 1 else {})}


class ReportParams(Group):
    format: Literal["png", "svg"] = "png"
    epochwise_width: int | None = Field(None, gt=0, description="width of the epoch-wise figures (null: the peak)")


class Params(Group):
    seed: Seed = 42
    data: DataParams = DataParams()
    noise: NoiseParams = NoiseParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    grid: GridParams = GridParams()
    mlflow: MlflowParams = MlflowParams()
    execution: ExecutionParams = ExecutionParams()
    report: ReportParams = ReportParams()
    # One typed group per study joins these in `params_model()`, from the study registry, so
    # adding a study never touches this file.


@cache
def params_model() -> type[Params]:
    """`Params` plus every registered study's group (typed, `extra="forbid"`)."""
    from netgeom.stages.registry import STUDIES, params_module

    groups = {entry.name: (params_module(entry).PARAMS, params_module(entry).PARAMS()) for entry in STUDIES}
    return create_model("AllParams", __base__=Params, __module__=__name__, **groups)


def __getattr__(name: str):
    # Pickle (process pools, Ray) finds the generated class by name in every process.
    if name == "AllParams":
        return params_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _describe(error: dict[str, Any]) -> tuple[str, str]:
    key = ""
    for part in error["loc"]:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    kind = error["type"]
    if kind == "extra_forbidden":
        return key, "unknown key (check the spelling against the README's params table)"
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        return key, f"must be one of {ctx.get('expected')} (got {error.get('input')!r})"
    got = error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    return key, f"{message} (got {got!r})" if not isinstance(got, dict) else message


def validate(raw: dict[str, Any], model: type[BaseModel] | None = None, prefix: str = ""):
    """Validate a mapping against `model` (default: every params group); the first problem
    becomes a `NetgeomError` naming the dotted key."""
    model = model or params_model()
    try:
        return model.model_validate(raw or {})
    except NetgeomError:
        raise
    except ValidationError as exc:
        error = exc.errors()[0]
        cause = error.get("ctx", {}).get("error")
        key, problem = _describe(error)
        if isinstance(cause, NetgeomError):  # raised by a model validator: key relative to it
            raise NetgeomError(prefix + ".".join(filter(None, [key, cause.key])), cause.problem) from None
        raise NetgeomError(prefix + key, problem) from None


# A params file is a few KB; parsing a huge one (50 MB, millions of keys) would take minutes.
MAX_PARAMS_BYTES = 1 << 20


def read_params_yaml(path: Path) -> Any:
    """A params (or preset) YAML file parsed safely (no tags that build objects), size-capped."""
    if path.is_dir():
        raise NetgeomError("params", f"{path} is a folder, not a params file")
    size = path.stat().st_size
    if size > MAX_PARAMS_BYTES:
        raise NetgeomError("params", f"{path} is {size / 2**20:.1f} MB; a params file is a few KB (limit {MAX_PARAMS_BYTES >> 20} MB)")
    try:
        return yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise NetgeomError("params", f"{path} is not valid YAML: {exc}".splitlines()[0]) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.exists():
        raise NetgeomError("params", f"{path} does not exist")
    raw = read_params_yaml(path)
    if raw is None:
        raise NetgeomError("params", f"{path} is empty; copy the repository's params.yaml (an empty file is not 'all defaults')")
    if not isinstance(raw, dict):
        raise NetgeomError("params", f"{path} must hold a mapping at the top level")
    return validate(raw)


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 0.1}} -> {'train.lr': 0.1} (for MLflow params and tables)."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
