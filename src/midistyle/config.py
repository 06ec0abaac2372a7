"""Typed, validated settings loaded from ``params.yaml``.

Every section of ``params.yaml`` maps to a frozen dataclass below. Loading is
strict: an unknown key, a missing key, a value of the wrong type or a value out
of range raises :class:`ConfigError` with the dotted name of the key, e.g.
``params.yaml: train.lr: must be > 0, got -1.0`` or
``params.yaml: model.latent_size: missing``.

params.yaml is the one place a setting's value is written: the dataclasses
carry no defaults (only a data :class:`Source` entry has optional keys). Field
metadata carries the checks: ``gt``/``ge``/``le``/``lt`` bounds and
``choices``. ``Optional`` fields accept ``null`` (they are still required).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from midistyle.directions import ambiguous_pair
from midistyle.errors import UserError


class ConfigError(UserError):
    """A problem with params.yaml, naming the key."""


def _f(**checks: Any) -> Any:
    """A required dataclass field with validation metadata (gt, ge, lt, le, choices); no default."""
    return field(metadata=checks)


# ---------------------------------------------------------------- data sources
@dataclass(frozen=True)
class Source:
    """One collection of MIDI pieces for a style: an entry of a list in params.yaml.

    Exactly one of music21/url/local names the collection; the other keys are
    optional filters. These are the only fields with defaults: an absent key
    means "not this kind" or "no filter", not a hidden setting of the pipeline.
    """

    music21: Optional[str] = None  # a composer or corpus folder of music21's corpus, e.g. "bach"
    url: Optional[str] = None  # http(s) URL of a .mid/.midi file or a .zip/.tar(.gz) archive
    sha256: Optional[str] = None  # required with url
    local: Optional[str] = None  # a directory; "{corpus_dir}" is replaced by data.corpus_dir
    include: str = "*"  # glob on the path relative to the collection (music21 paths too)
    limit: Optional[int] = field(default=None, metadata={"gt": 0})  # at most this many (seeded choice, sorted list)

    def check(self, where: str) -> None:
        kinds = [k for k in ("music21", "url", "local") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ConfigError(f"{where}: a source needs exactly one of music21, url, local (got {kinds or 'none'})")
        if self.url is not None:
            if not re.match(r"^https?://", self.url):
                raise ConfigError(f"{where}.url: must start with http:// or https://, got {self.url!r}")
            if self.sha256 is None or not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
                raise ConfigError(f"{where}.sha256: a url source needs the 64-hex-digit sha256 of the file")
        elif self.sha256 is not None:
            raise ConfigError(f"{where}.sha256: only a url source takes a sha256")

    @property
    def kind(self) -> str:
        return next(k for k in ("music21", "url", "local") if getattr(self, k) is not None)


@dataclass(frozen=True)
class DataParams:
    profile: str
    corpus_dir: str
    # profile name -> style name -> list of sources
    profiles: dict[str, dict[str, list[Source]]]
    max_download_mb: float = _f(gt=0)  # cap on one download and on what an archive extracts to
    workers: int = _f(ge=1)  # processes converting/parsing in parallel

    def check(self, where: str) -> None:
        if self.profile not in self.profiles:
            raise ConfigError(f"{where}.profile: unknown profile {self.profile!r}; known: {sorted(self.profiles)}")
        for name, styles in self.profiles.items():
            if len(styles) < 2:
                raise ConfigError(f"{where}.profiles.{name}: needs at least two styles, got {sorted(styles)}")
            for style, sources in styles.items():
                if not re.fullmatch(r"[a-z][a-z0-9_]*", style):
                    raise ConfigError(f"{where}.profiles.{name}.{style}: style names are lower-case identifiers")
                if not sources:
                    raise ConfigError(f"{where}.profiles.{name}.{style}: no sources")
                for i, src in enumerate(sources):
                    src.check(f"{where}.profiles.{name}.{style}[{i}]")
            if clash := ambiguous_pair(styles):
                raise ConfigError(f"{where}.profiles.{name}: the directions {clash[0]} and {clash[1]} would both be "
                                  f"written {clash[0].key!r}; rename a style")

    @property
    def styles(self) -> dict[str, list[Source]]:
        return self.profiles[self.profile]


# ---------------------------------------------------------------- extraction
@dataclass(frozen=True)
class SplitParams:
    val: float = _f(ge=0.0, lt=0.5)
    test: float = _f(ge=0.0, lt=0.5)


@dataclass(frozen=True)
class ExtractParams:
    steps_per_beat: int = _f(ge=1, le=24)  # grid steps per quarter note
    pitch_low: int = _f(ge=0, le=127)
    pitch_high: int = _f(ge=0, le=127)  # inclusive
    out_of_range: str = _f(choices=("fold", "drop"))
    hands: str = _f(choices=("auto", "duplicate"))  # duplicate = the report's behaviour
    single_part: str = _f(choices=("split", "duplicate"))
    split_pitch: int = _f(ge=0, le=127)  # single part: notes >= split_pitch go to the right hand
    bars_per_window: int = _f(ge=1, le=64)
    hop_bars: int = _f(ge=1, le=64)
    max_beats_per_bar: int = _f(ge=1, le=16)  # beats of the longest bar a window holds (see RollSpec)
    min_notes_per_window: int = _f(ge=1)
    split: SplitParams
    shard_windows: int = _f(ge=1)  # windows per shard (bounds memory and file size)
    max_reject_share: float = _f(ge=0.0, le=1.0)  # fail the stage when more files are rejected
    max_file_mb: float = _f(gt=0)  # larger files are rejected unread

    def check(self, where: str) -> None:
        if self.pitch_high < self.pitch_low:
            raise ConfigError(f"{where}.pitch_high: must be >= pitch_low ({self.pitch_low}), got {self.pitch_high}")
        if self.pitch_high - self.pitch_low + 1 < 12 and self.out_of_range == "fold":
            raise ConfigError(f"{where}.out_of_range: fold needs a range of at least one octave")


# ---------------------------------------------------------------- model / training
@dataclass(frozen=True)
class ModelParams:
    latent_size: int = _f(ge=1)
    encoder: str = _f(choices=("per_hand", "joint"))  # a GRU per hand, or one over both
    encoder_hidden: int = _f(ge=1)
    dense_size: int = _f(ge=1)  # dense ReLU layer between encoder states and (mu, logvar)
    decoder: str = _f(choices=("flat", "hierarchical"))  # hierarchical: a bar-level conductor GRU
    conductor_hidden: int = _f(ge=1)  # the conductor's state (hierarchical decoder only)
    decoder_hidden: int = _f(ge=1)
    frames_per_step: int = _f(ge=1)  # roll frames read (encoder) / written (decoder) per GRU step
    autoregressive: bool  # decoder also reads the previous frame (its own output when generating)
    output: str = _f(choices=("independent", "note_state"))  # per cell: 2 Bernoullis | off/onset/hold
    dropout: float = _f(ge=0.0, lt=1.0)


MAX_SEARCH_NEIGHBOURS = 16  # transfer.search_neighbours: each adds a decoding per neighbour step
MAX_MELODY_WEIGHT = 100.0  # transfer.search_melody_weight: past the texture distance of any passing candidate
MAX_SEARCH_KNN = 256  # transfer.search_knn: sampled training latents that vote on each re-encoded candidate
MAX_REGION_SAMPLES = 65536  # classifier.region_samples: at most this many training latents per style in its checkpoint
MAX_TRANSPOSE = 24  # train, classifier and judge .transpose: at most two octaves either way


@dataclass(frozen=True)
class TrainParams:
    seed: int = _f(ge=0)  # VAE weights, noise and batch order (the data split keeps the top-level seed)
    lr: float = _f(gt=0.0, le=1.0)
    lr_schedule: str = _f(choices=("constant", "cosine"))  # cosine: lr -> min_lr over the run, step by step
    min_lr: float = _f(ge=0.0, le=1.0)  # cosine's final learning rate (at most lr)
    batch_size: int = _f(ge=1)
    epochs: int = _f(ge=1)
    clip_norm: float = _f(gt=0.0)
    kl_weight: float = _f(ge=0.0)  # final weight of the KL term
    kl_anneal_epochs: int = _f(ge=0)  # linear warm-up of the KL weight from 0
    free_bits: float = _f(ge=0.0)  # nats per latent dimension not penalised
    pos_weight: Optional[float] = _f(gt=0.0)  # null: from the training data's note density
    max_pos_weight: float = _f(gt=0.0)
    device: str = _f(choices=("auto", "cpu", "cuda"))
    num_processes: int = _f(ge=1)  # >1: DistributedDataParallel under torchrun
    threads: Optional[int] = _f(ge=1)  # CPU threads per process; null: the cores / num_processes
    threshold: Optional[float] = _f(gt=0.0, lt=1.0)  # a cell is a note above it; null: tuned on val (max F1)
    eval_windows: int = _f(ge=1)  # fixed val subset for free-decoding F1 and the threshold
    eval_every: int = _f(ge=1)  # validate after every eval_every-th epoch and after the last (the weights do not depend on it)
    epoch_windows: Optional[int] = _f(gt=0)  # cap on training windows per epoch (new seeded subset each); null: all
    balance_styles: bool  # with epoch_windows: share the cap equally between styles
    log_reconstructions: int = _f(ge=0)  # windows logged to MLflow as MIDI and pictures
    transpose: list[int]  # [low, high]: each training window moved by a random number of semitones in it; [0, 0]: off
    precision: str = _f(choices=("fp32", "bf16"))  # bf16: forward and loss under autocast (weights stay fp32)

    def check(self, where: str) -> None:
        if self.min_lr > self.lr:
            raise ConfigError(f"{where}.min_lr: must be at most {where}.lr ({self.lr}), got {self.min_lr}")
        _check_transpose(self.transpose, where)


def _check_transpose(t: list[int], where: str) -> None:
    if len(t) != 2 or not -MAX_TRANSPOSE <= t[0] <= 0 <= t[1] <= MAX_TRANSPOSE:
        raise ConfigError(f"{where}.transpose: must be [low, high] semitones with -{MAX_TRANSPOSE} <= low <= 0 "
                          f"<= high <= {MAX_TRANSPOSE}, got {t}")


@dataclass(frozen=True)
class ClassifierParams:
    hidden: int = _f(ge=1)
    lr: float = _f(gt=0.0)
    epochs: int = _f(ge=1)
    batch_size: int = _f(ge=1)
    weight_decay: float = _f(ge=0.0)
    patience: int = _f(ge=1)  # epochs without a better val balanced accuracy before stopping
    transpose: list[int]  # [low, high]: each training window encoded moved by a random number of semitones in it
    region_samples: int = _f(ge=1, le=MAX_REGION_SAMPLES)  # training latents kept per style (attribute_search's
                                                           # neighbour moves)

    def check(self, where: str) -> None:
        _check_transpose(self.transpose, where)


@dataclass(frozen=True)
class JudgeParams:
    channels: int = _f(ge=1)
    hidden: int = _f(ge=1)
    lr: float = _f(gt=0.0)
    epochs: int = _f(ge=1)
    batch_size: int = _f(ge=1)
    weight_decay: float = _f(ge=0.0)
    patience: int = _f(ge=1)
    transpose: list[int]  # [low, high]: each training window moved by a random number of semitones in it
    cut_share: float = _f(ge=0.0, le=1.0)  # share of training windows cut to a random number of beats (augment.cut)

    def check(self, where: str) -> None:
        _check_transpose(self.transpose, where)


TRANSFER_METHODS = ("attribute_vector", "classifier_guided", "attribute_search")  # midistyle.transfer has each
MAX_STRENGTH = 4.0  # the CLI's --strength: at most 4 times the strength chosen on validation pieces
MAX_ALPHA = 10.0  # attribute vector: alphas of the grid
MAX_GUIDED_STEPS = 1000  # classifier-guided: steps of the grid, and what the CLI's --strength/--steps may ask for
SEARCH_PATHS = ("mean_shift", "transport")  # attribute_search's latent paths (midistyle.transfer.StyleTransfer.path_vectors)


@dataclass(frozen=True)
class TransferParams:
    methods: list[str]
    # Transfer strength is chosen per direction on validation pieces (the tune_transfer stage): the smallest
    # grid value whose re-encoded target share x plausible reaches target_strength, else the best one.
    alpha_grid: list[float]  # attribute vector: alphas tried, ascending
    guided_steps_grid: list[int]  # classifier-guided: step counts tried, ascending
    search_paths: list[str]  # attribute_search: the latent paths tried at every alpha (SEARCH_PATHS); equal picks: the first
    search_threshold_offsets: list[float]  # attribute_search: added to the checkpoint's decision threshold
    search_right_hand_offsets: list[float]  # attribute_search: added to the right hand's threshold on top of each
    search_percentiles: list[float]  # attribute_search: the accepted band of the target's training windows' texture
    search_min_probability: float = _f(ge=0.0, lt=1.0)  # attribute_search: the latent classifier's least target probability
    search_neighbour_steps: list[float]  # attribute_search: for windows no path settles, steps towards the nearest
                                         # target training latent (fractions of the way, ascending, each in (0, 1]; [] off)
    search_neighbours: int = _f(ge=1, le=MAX_SEARCH_NEIGHBOURS)  # attribute_search: nearest target latents per step
    search_knn: int = _f(ge=1, le=MAX_SEARCH_KNN)  # attribute_search: training latents that vote on a candidate
    search_min_knn_share: float = _f(ge=0.0, le=1.0)  # attribute_search: their least target share (0: no vote)
    search_melody_weight: float = _f(ge=0.0, le=MAX_MELODY_WEIGHT)  # attribute_search: of the passing candidates, the
                                  # one nearest the target's median texture less this times its melody F1 with the source
    hold_threshold_grid: list[float]  # first-frame P(onset) thresholds under which a note sounding on is tied,
                                      # tried on the val pieces' reconstructions (ascending, each in (0, 1])
    target_strength: float = _f(gt=0.0, le=1.0)
    val_pieces_per_style: int = _f(ge=1)  # validation pieces (seeded choice) the choice is made on
    guided_lr: float = _f(gt=0.0)
    guided_distance_weight: float = _f(ge=0.0)
    max_pieces_per_style: Optional[int] = _f(gt=0)
    max_failed_share: float = _f(ge=0.0, le=1.0)  # fail the stage when more pieces fail

    def check(self, where: str) -> None:
        for m in self.methods:
            if m not in TRANSFER_METHODS:
                raise ConfigError(f"{where}.methods: unknown method {m!r}; known: {list(TRANSFER_METHODS)}")
        _check_grid(self.alpha_grid, f"{where}.alpha_grid", "> 0", lambda v: 0 < v <= MAX_ALPHA, MAX_ALPHA)
        if not self.search_paths or len(set(self.search_paths)) != len(self.search_paths):
            raise ConfigError(f"{where}.search_paths: must hold at least one path, each once, got {self.search_paths}")
        for i, path in enumerate(self.search_paths):
            if path not in SEARCH_PATHS:
                raise ConfigError(f"{where}.search_paths[{i}]: unknown path {path!r}; known: {list(SEARCH_PATHS)}")
        for key in ("search_threshold_offsets", "search_right_hand_offsets"):
            offsets = getattr(self, key)
            if not offsets:
                raise ConfigError(f"{where}.{key}: must hold at least one value")
            for i, o in enumerate(offsets):
                if not -0.5 <= o <= 0.5:
                    raise ConfigError(f"{where}.{key}[{i}]: must be from -0.5 to 0.5, got {o!r}")
        _check_grid(self.hold_threshold_grid, f"{where}.hold_threshold_grid", "> 0", lambda v: 0 < v <= 1, 1)
        steps = self.search_neighbour_steps
        if steps:
            _check_grid(steps, f"{where}.search_neighbour_steps", "> 0", lambda v: 0 < v <= 1, 1)
        lo_hi = self.search_percentiles
        if len(lo_hi) != 2 or not 0 <= lo_hi[0] < lo_hi[1] <= 100:
            raise ConfigError(f"{where}.search_percentiles: must be [low, high] with 0 <= low < high <= 100, got {lo_hi}")
        _check_grid(self.guided_steps_grid, f"{where}.guided_steps_grid", ">= 1", lambda v: 1 <= v <= MAX_GUIDED_STEPS,
                    MAX_GUIDED_STEPS)


def _check_grid(grid: list, where: str, low: str, ok: Callable[[Any], bool], high: float) -> None:
    """A non-empty, strictly ascending list of values that pass ``ok`` (``low`` and ``high`` name the range)."""
    if not grid:
        raise ConfigError(f"{where}: must hold at least one value")
    for i, v in enumerate(grid):
        if not ok(v):
            raise ConfigError(f"{where}[{i}]: must be {low} and <= {high:g}, got {v!r}")
    if any(b <= a for a, b in zip(grid, grid[1:])):
        raise ConfigError(f"{where}: must be strictly ascending, got {grid}")


@dataclass(frozen=True)
class EvaluateParams:
    report_pieces_per_direction: int = _f(ge=0)
    audio: str = _f(choices=("auto", "soundfont", "synth", "none"))
    sample_rate: int = _f(ge=8000)
    audio_seconds: float = _f(gt=0.0)  # each audio file plays the piece's beginning only
    recon_windows: Optional[int] = _f(gt=0)  # seeded sample of test windows for reconstruction; null = all


@dataclass(frozen=True)
class MlflowParams:
    experiment: str
    enabled: bool


@dataclass(frozen=True)
class Params:
    seed: int = _f(ge=0)
    data: DataParams
    extract: ExtractParams
    model: ModelParams
    train: TrainParams
    classifier: ClassifierParams
    judge: JudgeParams
    transfer: TransferParams
    evaluate: EvaluateParams
    mlflow: MlflowParams


# ---------------------------------------------------------------- loading
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e-3`` as a float (YAML 1.2), as DVC's -S writes it."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            return _convert(value, arg, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return _build(tp, value, where)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): _convert(v, item, f"{where}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise TypeError(f"unsupported type {tp} at {where}")  # a bug in this module, not in params.yaml


def _check_bounds(value: Any, meta: typing.Mapping[str, Any], where: str) -> None:
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{where}: must be one of {list(meta['choices'])}, got {value!r}")
    for key, ok, text in (
        ("gt", lambda v, b: v > b, ">"),
        ("ge", lambda v, b: v >= b, ">="),
        ("lt", lambda v, b: v < b, "<"),
        ("le", lambda v, b: v <= b, "<="),
    ):
        if key in meta and not ok(value, meta[key]):
            raise ConfigError(f"{where}: must be {text} {meta[key]}, got {value!r}")


def _optional(f: dataclasses.Field) -> bool:
    """A field params.yaml may leave out: only the filters of a data source have defaults."""
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def _build(cls: type, raw: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(map(str, raw)) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name in raw:
            kwargs[name] = _convert(raw[name], hints[name], key)
            _check_bounds(kwargs[name], f.metadata, key)
        elif not _optional(f):
            raise ConfigError(f"{key}: missing")
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def parse_params(raw: Any, source: str = "params.yaml") -> Params:
    """Build :class:`Params` from a parsed mapping; errors are prefixed with ``source``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    try:
        return _build(Params, raw, "")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_yaml(path: str | Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; raises :class:`ConfigError` naming the bad key."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: file not found")
    try:
        raw = load_yaml(path)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_params(raw, str(path))


def as_dict(params: Any) -> Any:
    """Plain-data view of a params object (for MLflow, checkpoints and JSON)."""
    return dataclasses.asdict(params)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1e-3}}`` -> ``{"train.lr": 1e-3}``; lists stay as values."""
    if dataclasses.is_dataclass(d):
        d = dataclasses.asdict(d)
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
