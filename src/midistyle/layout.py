"""The pipeline's files, relative to the repository root: each is named once here.

dvc.yaml has to spell them again (tests/test_pipeline_deps.py checks that it
spells these). Stages run from the repository root, so the paths are relative.
"""

from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")
SHARDS = Path("data/shards")
SPLITS = Path("data/splits.json")
TRANSFER_SWEEP = Path("data/transfer_sweep")
TRANSFERS = Path("data/transfers")
REPORT = Path("data/report")

VAE = Path("models/vae.pt")
VAE_LAST = Path("models/tmp/vae-last.pt")  # the resumable checkpoint (git-ignored, not a DVC out)
CLASSIFIER = Path("models/latent_classifier.pt")
JUDGE = Path("models/judge.pt")
TRANSFER_SETTINGS = Path("models/transfer_settings.json")

DOWNLOAD_METRICS = Path("metrics/download.json")
EXTRACT_METRICS = Path("metrics/extract.json")
TRAIN_METRICS = Path("metrics/train_vae.json")
TRAIN_CURVES = Path("metrics/train_vae_curves.csv")
CLASSIFIER_METRICS = Path("metrics/classifier.json")
JUDGE_METRICS = Path("metrics/judge.json")
EVAL_METRICS = Path("metrics/eval.json")
STRENGTH_CONTENT = Path("metrics/strength_content.csv")
