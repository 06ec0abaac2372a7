"""params.yaml is typed and validated: errors name the key; it is the one place a setting's value is written."""

import dataclasses
import re
import typing

import pytest

from midistyle import config
from midistyle.config import ConfigError, Params, Source, load_params, load_yaml, parse_params
from midistyle.model import VAEConfig
from midistyle.roll import RollSpec
from midistyle.transfer import TransferSettings
from tests.helpers_params import PARAMS


def base():
    return load_yaml(PARAMS)


def test_repository_params_load():
    p = load_params(PARAMS)
    assert RollSpec.from_params(p.extract).n_pitches == 51 and p.data.profile in p.data.profiles


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda r: r["train"].update(lr=-1), r"train\.lr: must be > 0"),
        (lambda r: r["train"].update(lr="fast"), r"train\.lr: expected a number"),
        (lambda r: r["train"].update(learning_rate=0.1), r"train\.learning_rate: unknown key"),
        (lambda r: r["model"].update(autoregressive="yes"), r"model\.autoregressive: expected true or false"),
        (lambda r: r["extract"].update(out_of_range="wrap"), r"extract\.out_of_range: must be one of"),
        (lambda r: r["extract"].update(bars_per_window=2.5), r"extract\.bars_per_window: expected an integer"),
        (lambda r: r["data"].update(profile="nope"), r"data\.profile: unknown profile 'nope'"),
        (lambda r: r["data"]["profiles"]["sample"]["baroque"][0].update(url="ftp://x"), r"a source needs exactly one"),
        (lambda r: r.update(sed=1), r"^params\.yaml: sed: unknown key"),
        (lambda r: r["transfer"].update(alpha=1.0), r"transfer\.alpha: unknown key"),
        (lambda r: r["train"].update(transpose=[1, 6]), r"train\.transpose: must be \[low, high\] semitones"),
        (lambda r: r["judge"].update(transpose=[-5, 30]), r"judge\.transpose: must be \[low, high\] semitones"),
        (lambda r: r["classifier"].update(transpose=[0]), r"classifier\.transpose: must be \[low, high\] semitones"),
        (lambda r: r["judge"].pop("transpose"), r"judge\.transpose: missing"),
        (lambda r: r["transfer"].update(alpha_grid=[1.0, 0.5]), r"transfer\.alpha_grid: must be strictly ascending"),
        (lambda r: r["transfer"].update(alpha_grid=[0.0, 1.0]), r"transfer\.alpha_grid\[0\]: must be > 0"),
        (lambda r: r["transfer"].update(alpha_grid=[1.0, 11.0]), r"transfer\.alpha_grid\[1\]: must be > 0 and <= 10"),
        (lambda r: r["transfer"].update(alpha_grid=[]), r"transfer\.alpha_grid: must hold at least one value"),
        (lambda r: r["transfer"].update(hold_threshold_grid=[0.0, 0.5]), r"transfer\.hold_threshold_grid\[0\]: must be > 0"),
        (lambda r: r["transfer"].update(hold_threshold_grid=[0.5, 1.5]), r"transfer\.hold_threshold_grid\[1\]: must be > 0 and <= 1"),
        (lambda r: r["transfer"].update(hold_threshold_grid=[0.9, 0.5]), r"transfer\.hold_threshold_grid: must be strictly ascending"),
        (lambda r: r["transfer"].update(hold_threshold_grid=[]), r"transfer\.hold_threshold_grid: must hold at least one value"),
        (lambda r: r["transfer"].update(guided_steps_grid=[10, 2000]), r"transfer\.guided_steps_grid\[1\]: .*<= 1000"),
        (lambda r: r["transfer"].update(guided_steps_grid=[1.5]), r"transfer\.guided_steps_grid\[0\]: expected an integer"),
        (lambda r: r["transfer"].update(target_strength=1.5), r"transfer\.target_strength: must be <= 1"),
        (lambda r: r["transfer"].update(val_pieces_per_style=0), r"transfer\.val_pieces_per_style: must be >= 1"),
        (lambda r: r["transfer"].update(search_paths=["sideways"]), r"transfer\.search_paths\[0\]: unknown path 'sideways'"),
        (lambda r: r["transfer"].update(search_paths=[]), r"transfer\.search_paths: must hold at least one path"),
        (lambda r: r["transfer"].update(search_paths=["transport", "transport"]), r"transfer\.search_paths: .*each once"),
        (lambda r: r["transfer"].update(search_right_hand_offsets=[0.0, -0.6]),
         r"transfer\.search_right_hand_offsets\[1\]: must be from -0.5 to 0.5"),
        (lambda r: r["transfer"].update(search_right_hand_offsets=[]), r"transfer\.search_right_hand_offsets: must hold at"),
        (lambda r: r["transfer"].update(search_neighbour_steps=[0.5, 1.5]),
         r"transfer\.search_neighbour_steps\[1\]: must be > 0 and <= 1, got 1.5"),
        (lambda r: r["transfer"].update(search_neighbour_steps=[1.0, 0.5]),
         r"transfer\.search_neighbour_steps: must be strictly ascending"),
        (lambda r: r["transfer"].update(search_neighbours=0), r"transfer\.search_neighbours"),
        (lambda r: r["transfer"].update(search_neighbours=17), r"transfer\.search_neighbours"),
        (lambda r: r["transfer"].update(search_knn=0), r"transfer\.search_knn"),
        (lambda r: r["transfer"].update(search_min_knn_share=1.5), r"transfer\.search_min_knn_share"),
        (lambda r: r["classifier"].update(region_samples=70000), r"classifier\.region_samples"),
        (lambda r: r["transfer"].update(search_threshold_offsets=[]), r"transfer\.search_threshold_offsets: must hold at"),
    ],
)
def test_bad_values_name_the_key(edit, message):
    raw = base()
    edit(raw)
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_dvc_style_exponent_floats_are_numbers(tmp_path):
    text = PARAMS.read_text()
    text = re.sub(r"^seed: .*$", "seed: 0", text, count=1, flags=re.M)
    text = re.sub(r"^(  lr:) \S+", r"\1 1e-3", text, count=1, flags=re.M)  # the first lr: train's
    text = re.sub(r"^(  seed:) \S+", r"\1 0", text, count=1, flags=re.M)  # train.seed
    (tmp_path / "p.yaml").write_text(text)
    p = load_params(tmp_path / "p.yaml")
    assert p.train.lr == pytest.approx(0.001) and p.seed == 0 and p.train.seed == 0  # a seed of 0 is a seed


# ---------------------------------------------------------------- one source for each default
def _sections(cls=Params, where=""):
    """(dotted key, field) of every setting of params.yaml, sections included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{where}.{f.name}" if where else f.name
        yield key, f
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _sections(hints[f.name], key)


def _drop(raw: dict, key: str) -> None:
    *parents, last = key.split(".")
    for p in parents:
        raw = raw[p]
    del raw[last]


def test_a_missing_key_is_an_error_naming_it():
    raw = base()
    del raw["model"]["latent_size"]
    with pytest.raises(ConfigError, match=r"^params\.yaml: model\.latent_size: missing$"):
        parse_params(raw)


@pytest.mark.parametrize("key", [k for k, _ in _sections()])
def test_every_key_of_params_yaml_is_required(key):
    raw = base()
    _drop(raw, key)
    with pytest.raises(ConfigError, match=rf"^params\.yaml: {re.escape(key)}: missing$"):
        parse_params(raw)


def test_no_settings_dataclass_has_a_default():
    """params.yaml alone holds the values: the dataclasses read from it, and the runtime settings built from them."""
    classes = [Params] + [c for c in vars(config).values() if dataclasses.is_dataclass(c) and c.__name__.endswith("Params")]
    classes += [RollSpec, VAEConfig, TransferSettings]
    with_default = [f"{c.__name__}.{f.name}" for c in classes for f in dataclasses.fields(c)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert with_default == []


def test_only_a_sources_filters_are_optional():
    """A data source entry names one of music21/url/local; the rest narrow it down and may be left out."""
    optional = {f.name for f in dataclasses.fields(Source) if f.default is not dataclasses.MISSING}
    assert optional == {"music21", "url", "sha256", "local", "include", "limit"}
    raw = base()
    raw["data"]["profiles"]["sample"]["baroque"] = [{"music21": "bach"}]
    assert parse_params(raw).data.profiles["sample"]["baroque"] == [Source(music21="bach")]
