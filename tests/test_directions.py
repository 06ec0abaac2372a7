"""Directions are (source, target) pairs; their text form is parsed against the style names."""

from __future__ import annotations

import pytest

from midistyle.config import ConfigError, load_yaml, parse_params
from midistyle.directions import Direction, ambiguous_pair, parse_direction
from midistyle.errors import UserError
from midistyle.report import direction_label
from midistyle.transfer import output_path

STYLES = ["back_to_back", "jazz", "pop"]


@pytest.mark.parametrize("source, target", [("back_to_back", "jazz"), ("jazz", "back_to_back"), ("pop", "jazz")])
def test_a_style_named_with_to_round_trips(source, target):
    d = Direction(source, target)
    assert parse_direction(d.key, STYLES) == d
    assert direction_label(d.key, STYLES) == f"{source} → {target}"


def test_a_key_between_unknown_styles_is_refused():
    with pytest.raises(UserError, match=r"'rock_to_jazz' is not a direction between the styles"):
        parse_direction("rock_to_jazz", STYLES)


def test_styles_whose_keys_read_two_ways_are_found():
    assert ambiguous_pair(["a", "a_to_b", "b_to_c", "c"]) is not None
    assert ambiguous_pair(STYLES) is None


def test_params_refuse_styles_whose_directions_read_two_ways():
    raw = load_yaml("params.yaml")
    styles = raw["data"]["profiles"]["sample"]
    first = styles[sorted(styles)[0]]
    styles.update({"a": first, "a_to_b": first, "b_to_c": first, "c": first})
    with pytest.raises(ConfigError, match=r"data\.profiles\.sample: the directions .* would both be written 'a_to_b_to_c'"):
        parse_params(raw)


def test_output_paths_use_the_text_key():
    assert output_path("guided", "back_to_back", "jazz", "x.mid").startswith("guided/back_to_back_to_jazz/")
