"""The tests' settings: the repository's params.yaml, shrunk to runs of seconds on one CPU thread.

Every test that needs params starts from the real file, so it runs the code path
users run, with the keys users have (a key params.yaml lacks fails here as it
fails for them). :data:`TINY` shrinks what makes a run slow; a test's own corpus
(its styles, its grid) and its changes come on top, section by section:
``tiny_params(train={"epochs": 2})`` changes one key of ``train``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from midistyle.config import Params, load_params, load_yaml, parse_params
from midistyle.roll import RollSpec

REPO = Path(__file__).resolve().parents[1]
PARAMS = REPO / "params.yaml"

TINY = {  # small networks, few epochs, one thread, no audio files of any length, MLflow off
    "data": {"workers": 1},
    "model": {"latent_size": 8, "encoder_hidden": 16, "dense_size": 16, "decoder_hidden": 32},
    "train": {"epochs": 3, "batch_size": 8, "kl_anneal_epochs": 1, "eval_windows": 16, "device": "cpu",
              "threads": 1, "log_reconstructions": 2},  # 1 thread: tiny models, and robust to a busy machine
    "classifier": {"hidden": 16, "epochs": 30, "batch_size": 16, "lr": 0.01, "patience": 30},
    "judge": {"channels": 4, "hidden": 8, "epochs": 15, "batch_size": 8, "lr": 0.01, "patience": 15},
    "transfer": {"guided_steps_grid": [2, 5], "guided_lr": 0.2, "val_pieces_per_style": 2},
    "evaluate": {"report_pieces_per_direction": 1, "audio": "synth", "audio_seconds": 4, "sample_rate": 8000},
    "mlflow": {"enabled": False},
}


def repo_raw() -> dict:
    """params.yaml as parsed YAML (a fresh copy each call)."""
    return load_yaml(PARAMS)


def repo_params() -> Params:
    return load_params(PARAMS)


def repo_spec(**changes) -> RollSpec:
    """The piano-roll grid of params.yaml's extract section, with ``changes``."""
    return dataclasses.replace(RollSpec.from_params(repo_params().extract), **changes)


def tiny_raw(*layers: dict, **sections) -> dict:
    """params.yaml <- :data:`TINY` <- each of ``layers`` <- ``sections``; a mapping updates its section's keys."""
    raw = repo_raw()
    for layer in (TINY, *layers, sections):
        for name, values in layer.items():
            raw[name] = {**raw[name], **values} if isinstance(values, dict) else values
    return raw


def tiny_params(*layers: dict, **sections) -> Params:
    return parse_params(tiny_raw(*layers, **sections))
