"""params.yaml is typed and validated: errors name the key."""

import pytest

from midistyle.config import ConfigError, load_params, load_yaml, parse_params


def base():
    return load_yaml("params.yaml")


def test_repository_params_load():
    p = load_params("params.yaml")
    assert p.extract.n_pitches == 51 and p.data.profile in p.data.profiles


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
        (lambda r: r["transfer"].update(alpha_grid=[1.0, 0.5]), r"transfer\.alpha_grid: must be strictly ascending"),
        (lambda r: r["transfer"].update(alpha_grid=[0.0, 1.0]), r"transfer\.alpha_grid\[0\]: must be > 0"),
        (lambda r: r["transfer"].update(alpha_grid=[1.0, 11.0]), r"transfer\.alpha_grid\[1\]: must be > 0 and <= 10"),
        (lambda r: r["transfer"].update(alpha_grid=[]), r"transfer\.alpha_grid: must hold at least one value"),
        (lambda r: r["transfer"].update(guided_steps_grid=[10, 2000]), r"transfer\.guided_steps_grid\[1\]: .*<= 1000"),
        (lambda r: r["transfer"].update(guided_steps_grid=[1.5]), r"transfer\.guided_steps_grid\[0\]: expected an integer"),
        (lambda r: r["transfer"].update(target_strength=1.5), r"transfer\.target_strength: must be <= 1"),
        (lambda r: r["transfer"].update(val_pieces_per_style=0), r"transfer\.val_pieces_per_style: must be >= 1"),
    ],
)
def test_bad_values_name_the_key(edit, message):
    raw = base()
    edit(raw)
    with pytest.raises(ConfigError, match=message):
        parse_params(raw)


def test_dvc_style_exponent_floats_are_numbers(tmp_path):
    text = (tmp_path / "p.yaml")
    text.write_text("train:\n  lr: 1e-3\nseed: 0\n")
    p = load_params(text)
    assert p.train.lr == pytest.approx(0.001) and p.seed == 0  # a seed of 0 is a seed
