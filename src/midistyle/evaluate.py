"""The evaluate stage: metrics/eval.json and the HTML report, from real MIDI in and out.

What is measured, in the order one should read it:

1. **The judge** (:mod:`midistyle.judge`) on real test windows. A judge that
   cannot tell real pieces apart judges nothing, so its accuracy comes first.
2. The latent classifier on real test windows, and the VAE's reconstruction
   by free decoding (precision/recall/F1 of a seeded sample of test windows).
3. **Transfers**: every MIDI file the transfer stage wrote is read back through
   :func:`~midistyle.roll.read_piece` and cut into the same windows as its
   source. Per direction (source -> target style) and method:

   * *strength*: share of the source's audible windows whose transferred
     window the judge assigns to the target style (a window that came out
     silent counts as a miss);
   * *content*: chroma similarity (cosine of per-bar pitch-class vectors) and
     rhythm similarity (F1 of onset steps) with the source;
   * musical statistics of sources, transfers and real target pieces, and the
     share of the source-to-target gap each transfer closed.

   Beside every figure, the baselines: ``copy_content`` (the source
   unchanged), ``copy_style`` (a real test piece of the target style, chosen
   at random, seeded) and ``reconstruction`` (the VAE without a latent move).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from midistyle import musicstats as ms
from midistyle.classifier import classification_metrics, encode_rolls, load_classifier, predict
from midistyle.errors import UserError
from midistyle.fileio import atomic_write_json
from midistyle.judge import judge_probs, load_judge
from midistyle.model import load_vae
from midistyle.roll import RollError, RollSpec, Timing, read_piece
from midistyle.shards import ShardIndex
from midistyle.transfer import METHODS, RECONSTRUCTION, audible, piece_windows, read_manifest, select_test_pieces

log = logging.getLogger(__name__)

BASELINES = ("reconstruction", "copy_content", "copy_style")
SCORES = ("strength", "chroma_similarity", "rhythm_similarity", "gap_closed")


@dataclass
class Heard:
    """A MIDI file as the evaluation hears it: its roll, bar lines and judged windows."""

    path: Path
    roll: np.ndarray
    bar_starts: list[int]
    timing: Timing
    starts: np.ndarray  # (N,) first step of every audible window
    judged: np.ndarray  # (N,) the judge's style index for each
    stats: dict[str, float] = field(default_factory=dict)


class Listener:
    """Reads MIDI back and judges it, caching by path (a source is heard once for all its directions)."""

    def __init__(self, judge, spec: RollSpec):
        self.judge, self.spec = judge, spec
        self.cache: dict[Path, Heard] = {}

    def hear(self, path: str | Path) -> Heard:
        path = Path(path)
        if path not in self.cache:
            self.cache[path] = self._hear(path)
        return self.cache[path]

    def _hear(self, path: Path) -> Heard:
        spec = self.spec
        try:
            piece = read_piece(path, spec)
        except RollError as exc:
            if exc.reason != "no_notes":
                raise
            # A transfer that came out silent is a valid (bad) answer, not a broken file.
            empty = np.zeros((0, 2, 2, spec.n_pitches), bool)
            return Heard(path, empty, [0], Timing(), np.zeros(0, int), np.zeros(0, int),
                         ms.music_stats(empty, [0], spec.steps_per_beat, spec.pitch_low))
        windows = piece_windows(piece, spec)
        keep = audible(windows, spec)
        kept = [w for w, k in zip(windows, keep) if k]
        if kept:
            probs = judge_probs(self.judge, np.stack([w.roll for w in kept]), np.array([w.length for w in kept]))
            judged = probs.argmax(-1)
        else:
            judged = np.zeros(0, int)
        stats = ms.music_stats(piece.roll, piece.bar_starts, spec.steps_per_beat, spec.pitch_low)
        return Heard(path, piece.roll, piece.bar_starts, piece.timing, np.array([w.start for w in kept], int), judged, stats)


# ---------------------------------------------------------------- one comparison
def strength(output: Heard, source: Heard | None, target: int) -> tuple[int, int]:
    """(windows judged as target, windows counted).

    With a source, the windows counted are the source's audible windows, and the
    output's window at the same start is judged (none there: a miss). Without
    one (copy_style), the output's own audible windows.
    """
    if source is None:
        return int((output.judged == target).sum()), len(output.judged)
    verdict = dict(zip(output.starts.tolist(), output.judged.tolist()))
    hits = sum(verdict.get(s) == target for s in source.starts.tolist())
    return int(hits), len(source.starts)


def compare(output: Heard, source: Heard, target: int, pitch_low: int, aligned: bool = True) -> dict:
    """Strength, content similarity and statistics of one output against its source."""
    hits, n = strength(output, source if aligned else None, target)
    return {
        "hits": hits,
        "windows": n,
        "chroma_similarity": ms.chroma_similarity(source.roll, source.bar_starts, output.roll, output.bar_starts, pitch_low),
        "rhythm_similarity": ms.rhythm_similarity(source.roll, output.roll),
        "stats": output.stats,
    }


# ---------------------------------------------------------------- aggregation
def aggregate(records: list[dict], source_stats: list[dict], target_stats: dict[str, float]) -> dict:
    """Pieces of one (system, direction) -> pooled strength, mean similarities, mean stats, gap closed."""
    hits = sum(r["hits"] for r in records)
    windows = sum(r["windows"] for r in records)
    stats = {k: ms.nanmean([r["stats"][k] for r in records]) for k in ms.STAT_NAMES}
    src = {k: ms.nanmean([s[k] for s in source_stats]) for k in ms.STAT_NAMES}
    gaps = {k: ms.gap_closed(src[k], stats[k], target_stats[k]) for k in ms.STAT_NAMES}
    return {
        "pieces": len(records),
        "windows": windows,
        "strength": hits / windows if windows else float("nan"),
        "chroma_similarity": ms.nanmean([r["chroma_similarity"] for r in records]),
        "rhythm_similarity": ms.nanmean([r["rhythm_similarity"] for r in records]),
        # clipped per statistic: a stat whose source already sat near the target would otherwise dominate
        "gap_closed": ms.nanmean([float(np.clip(g, -1.0, 1.0)) for g in gaps.values()]),
        "gap_closed_by_stat": gaps,
        "stats": stats,
    }


def summarise(directions: dict[str, dict]) -> dict:
    """Macro mean over directions (each direction weighs the same, whatever its piece count)."""
    return {k: ms.nanmean([d[k] for d in directions.values()]) for k in SCORES}


# ---------------------------------------------------------------- real test windows
def score_real_windows(index: ShardIndex, vae, classifier, judge, threshold: float, recon_windows: int | None,
                       seed: int) -> dict:
    """Judge and latent classifier on every test window; reconstruction on a seeded sample of them."""
    from midistyle.recon import add_counts, count_cells, reconstruct, scores

    test = index.load_split("test")
    styles = index.styles
    judged = judge_probs(judge, test.rolls, test.lengths).argmax(-1)
    mu = encode_rolls(vae, test.rolls, test.lengths)
    predicted = predict(classifier, torch.from_numpy(mu))
    n = len(test) if recon_windows is None else min(recon_windows, len(test))
    pick = np.sort(np.random.default_rng([seed, 7]).choice(len(test), size=n, replace=False))
    sample = test.take(pick)
    counts = None
    for lo in range(0, n, 256):
        part = sample.take(slice(lo, lo + 256))
        probs = reconstruct(vae, part.rolls, part.lengths, threshold)
        counts = add_counts(counts, count_cells(probs > threshold, part.rolls.astype(bool), part.lengths))
    rec = scores(counts)
    return {
        "judge": classification_metrics(test.style, judged, styles),
        "latent_classifier": classification_metrics(test.style, predicted, styles),
        "reconstruction": {k: rec[k] for k in ("precision", "recall", "f1", "onset_precision", "onset_recall",
                                                "onset_f1", "windows")} | {"threshold": threshold},
    }


# ---------------------------------------------------------------- the stage
@dataclass(frozen=True)
class EvalPaths:
    shards: Path = Path("data/shards")
    raw: Path = Path("data/raw")
    splits: Path = Path("data/splits.json")
    transfers: Path = Path("data/transfers")
    vae: Path = Path("models/vae.pt")
    classifier: Path = Path("models/latent_classifier.pt")
    judge: Path = Path("models/judge.pt")
    report: Path = Path("data/report")
    metrics: Path = Path("metrics/eval.json")
    curves: Path = Path("metrics/train_vae_curves.csv")


def evaluate(params, paths: EvalPaths = EvalPaths()) -> dict:
    """Run the evaluate stage: writes ``metrics/eval.json`` and ``data/report/``, logs both to MLflow."""
    from midistyle.report import write_report
    from midistyle.tracking import start_run

    t0 = time.perf_counter()
    index = ShardIndex.open(paths.shards)
    vae, vae_ckpt = load_vae(paths.vae)
    classifier, _, clf_ckpt = load_classifier(paths.classifier)
    judge, judge_ckpt = load_judge(paths.judge)
    styles = list(index.styles)
    for name, ckpt in (("latent classifier", clf_ckpt), ("judge", judge_ckpt)):
        if list(ckpt["styles"]) != styles:
            raise UserError(f"the {name} knows styles {list(ckpt['styles'])}, the shards hold {styles} "
                            "(re-run `dvc repro train_classifier`)")
    spec = RollSpec(**vae_ckpt["spec"]) if "spec" in vae_ckpt else index.spec
    threshold = float(vae_ckpt.get("threshold", 0.5))

    with start_run(params, "evaluate") as run:
        real = score_real_windows(index, vae, classifier, judge, threshold, params.evaluate.recon_windows, params.seed)
        log.info("judge on real test windows: accuracy %.3f, balanced %.3f", real["judge"]["accuracy"],
                 real["judge"]["balanced_accuracy"])
        transfers = evaluate_transfers(params, paths, judge, spec, styles)
        metrics = {"styles": styles, **real, **transfers["metrics"]}
        atomic_write_json(paths.metrics, _finite(metrics))
        write_report(paths.report, params, metrics, transfers["listener"], transfers["records"], spec, paths)
        log.info("evaluate: %.1f s", time.perf_counter() - t0)
        run.log_metrics(flat_summary(metrics))
        run.log_artifact(paths.metrics, "metrics")
        run.log_artifacts(paths.report, "report")
    return metrics


def evaluate_transfers(params, paths: EvalPaths, judge, spec: RollSpec, styles: list[str]) -> dict:
    """Hear every transfer of the manifest and its baselines; aggregate per system and direction."""
    rows = read_manifest(paths.transfers / "manifest.csv")
    listener = Listener(judge, spec)
    style_id = {s: i for i, s in enumerate(styles)}
    pieces = select_test_pieces(paths.raw, paths.splits, styles, params.transfer.max_pieces_per_style, params.seed)
    target_stats = {s: {k: ms.nanmean([listener.hear(paths.raw / f).stats[k] for f in files]) for k in ms.STAT_NAMES}
                    for s, files in pieces.items()}
    ok = [r for r in rows if r["status"] == "ok"]
    recon_of = {r["source_file"]: paths.transfers / r["output_file"] for r in ok if r["method"] == RECONSTRUCTION}
    records: dict[tuple[str, str], list[dict]] = defaultdict(list)  # (system, direction) -> per-piece records
    sources: dict[str, list[str]] = defaultdict(list)  # direction -> source files
    for r in ok:
        if r["method"] not in METHODS:
            continue
        src_style, tgt_style, file = r["source_style"], r["target_style"], r["source_file"]
        direction = f"{src_style}_to_{tgt_style}"
        target = style_id[tgt_style]
        source = listener.hear(paths.raw / file)
        out = {"file": file, "source_style": src_style, "target_style": tgt_style}
        records[(r["method"], direction)].append(
            out | {"output": str(paths.transfers / r["output_file"])} | compare(listener.hear(paths.transfers / r["output_file"]), source, target, spec.pitch_low))
        if file in sources[direction]:
            continue
        sources[direction].append(file)
        records[("copy_content", direction)].append(out | {"output": str(paths.raw / file)} | compare(source, source, target, spec.pitch_low))
        if file in recon_of:
            records[("reconstruction", direction)].append(
                out | {"output": str(recon_of[file])} | compare(listener.hear(recon_of[file]), source, target, spec.pitch_low))
        candidates = pieces.get(tgt_style) or []
        if candidates:
            other = random.Random(f"{params.seed}:copy_style:{file}:{tgt_style}").choice(candidates)
            records[("copy_style", direction)].append(
                out | {"output": str(paths.raw / other)} | compare(listener.hear(paths.raw / other), source, target, spec.pitch_low, aligned=False))
    systems: dict[str, dict] = {}
    for system in (*[m for m in METHODS if any(k[0] == m for k in records)], *BASELINES):
        directions = {}
        for d in sorted(sources):
            recs = records.get((system, d), [])
            if not recs:
                continue
            tgt_style = d.split("_to_", 1)[1] if "_to_" in d else d
            src_stats = [listener.hear(paths.raw / f).stats for f in sources[d]]
            directions[d] = aggregate(recs, src_stats, target_stats[tgt_style])
        if directions:
            systems[system] = {"mean": summarise(directions), "directions": directions}
    failed = [r for r in rows if r["status"] != "ok"]
    metrics = {
        "transfer": systems,
        "target_stats": target_stats,
        "transfer_outputs": {"ok": len(ok), "failed": len(failed),
                             "pieces_failed": len({r["source_file"] for r in failed})},
    }
    return {"metrics": metrics, "listener": listener, "records": records}


def flat_summary(metrics: dict) -> dict[str, float]:
    """The headline numbers as flat MLflow metric names."""
    out = {
        "judge_test_accuracy": metrics["judge"]["accuracy"],
        "judge_test_balanced_accuracy": metrics["judge"]["balanced_accuracy"],
        "classifier_test_accuracy": metrics["latent_classifier"]["accuracy"],
        "classifier_test_balanced_accuracy": metrics["latent_classifier"]["balanced_accuracy"],
        "reconstruction_f1": metrics["reconstruction"]["f1"],
    }
    for system, data in metrics["transfer"].items():
        for k, v in data["mean"].items():
            out[f"{system}_{k}"] = v
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}


def _finite(obj):
    """NaN -> null, so eval.json stays valid JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
