"""The evaluate stage: metrics/eval.json and the HTML report, from real MIDI in and out.

What is measured, in the order one should read it:

1. **The judge** (:mod:`midistyle.judge`) on real test windows: two members,
   one reading the hands apart and one merged, whose verdict counts only where
   they agree. A judge that cannot tell real pieces apart judges nothing, so
   its accuracy (and each member's) comes first.
2. The latent classifier on real test windows, and the VAE's reconstruction
   by free decoding (precision/recall/F1 of a seeded sample of test windows).
3. **Transfers**: every MIDI file the transfer stage wrote is read back through
   :func:`~midistyle.roll.read_piece` and cut into the same windows as its
   source. Per direction (source -> target style) and method:

   * *plausible strength* (the headline): share of the source's audible
     windows whose transferred window the judge assigns to the target style
     **and** that is plausible: its note density (onsets per beat),
     polyphony (mean notes sounding together on sounding steps), right hand's
     share of notes and left hand's onsets per beat
     (:data:`midistyle.musicstats.WINDOW_FEATURES`) lie inside
     the 5th-95th percentile band of the real **test** windows of the style it
     should have (:func:`midistyle.musicstats.plausible`) - the target for a
     transfer, copy_content and copy_style, the source's style for a
     reconstruction. Clutter (blocks of sustained notes) fails it;
   * *strength*: the judge's verdict alone, and the *plausible share* alone
     (a window that came out silent counts as a miss for all three); beside
     them each member's verdict alone (``strength_by_judge``);
   * *content*: chroma similarity (cosine of per-bar pitch-class vectors),
     *melody kept* (F1 of the right hand's top line, ``(step, pitch)`` pairs)
     and rhythm similarity (F1 of onset steps) with the source;
   * musical statistics of sources, transfers and real target pieces, and the
     share of the source-to-target gap each transfer closed.

   Beside every figure, the baselines: ``copy_content`` (the source
   unchanged), ``copy_style`` (a real test piece of the target style, chosen
   at random, seeded) and ``reconstruction`` (the VAE without a latent move).
4. **The strength <-> content curve**: the tune_transfer stage's sweep of
   every grid value on validation pieces (``data/transfer_sweep/``), judged
   here - plausible strength against chroma similarity and melody F1 per
   method, direction and setting (``metrics/strength_content.csv``, a DVC
   plot). The judge evaluates the sweep; it took no part in choosing.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

import numpy as np
import torch

from midistyle import layout
from midistyle import musicstats as ms
from midistyle.classifier import encode_rolls, load_classifier, predict
from midistyle.directions import Direction, parse_direction
from midistyle.errors import UserError
from midistyle.fileio import atomic_write_json, atomic_write_text
from midistyle.fitting import classification_metrics
from midistyle.judge import agreed, judge_verdicts, judge_votes, load_judge, moved_votes
from midistyle.model import load_vae, vae_spec
from midistyle.recon import add_counts, count_cells, reconstruct, scores
from midistyle.report import write_report
from midistyle.roll import RollError, RollSpec, Timing, read_piece
from midistyle.shards import ShardIndex
from midistyle.tracking import start_run
from midistyle.transfer import (
    KNOBS,
    METHODS,
    RECONSTRUCTION,
    audible_windows,
    load_chosen_settings,
    read_manifest,
    select_test_pieces,
    stitch_tied,
)
from midistyle.tuning import read_sweep

log = logging.getLogger(__name__)

BASELINES = ("reconstruction", "copy_content", "copy_style")
SCORES = ("plausible_strength", "strength", "plausible_share", "chroma_similarity", "melody_f1", "rhythm_similarity",
          "gap_closed")
CURVE_COLUMNS = ("method", "direction", "knob", "value", "cli_strength", "chosen", "plausible_strength", "strength",
                 "plausible_share", "chroma_similarity", "melody_f1", "val_selection_score", "windows")


@dataclass
class Heard:
    """A MIDI file as the evaluation hears it: its roll, bar lines and judged windows."""

    path: Path
    roll: np.ndarray
    bar_starts: list[int]
    timing: Timing
    starts: np.ndarray  # (N,) first step of every audible window
    judged: np.ndarray  # (N,) the judge's style index for each (NO_VERDICT where its members disagree)
    stats: dict[str, float] = field(default_factory=dict)
    features: np.ndarray = field(default_factory=lambda: np.zeros((0, len(ms.WINDOW_FEATURES))))  # (N, F) of each (ms.WINDOW_FEATURES)
    votes: dict[str, np.ndarray] = field(default_factory=dict)  # member name -> (N,) its style index for each


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
                         ms.music_stats(empty, [0], spec.steps_per_beat, spec.pitch_low),
                         votes={name: np.zeros(0, int) for name in self.judge.members})
        kept = audible_windows(piece, spec)
        votes = {name: np.zeros(0, int) for name in self.judge.members}
        features = np.zeros((0, len(ms.WINDOW_FEATURES)))
        if kept:
            rolls, lengths = np.stack([w.roll for w in kept]), np.array([w.length for w in kept])
            votes = judge_votes(self.judge, rolls, lengths)
            features = ms.window_features(rolls, lengths, spec.steps_per_beat)
        stats = ms.music_stats(piece.roll, piece.bar_starts, spec.steps_per_beat, spec.pitch_low)
        return Heard(path, piece.roll, piece.bar_starts, piece.timing, np.array([w.start for w in kept], int),
                     agreed(votes), stats, features, votes)


# ---------------------------------------------------------------- one comparison
def window_verdicts(output: Heard, source: Heard | None, target: int, bounds: np.ndarray,
                    judged: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(judged target, plausible) per window counted, both bool; ``judged``: other verdicts than the panel's
    (one member's votes), one per output window.

    With a source, the windows counted are the source's audible windows, and the
    output's window at the same start is judged (none there - it came out
    silent: a miss). Without one (copy_style), the output's own audible windows.
    """
    judged = output.judged if judged is None else judged
    ok = ms.plausible(output.features, bounds)
    if source is None:
        return judged == target, ok
    at = {s: i for i, s in enumerate(output.starts.tolist())}
    idx = np.array([at.get(s, -1) for s in source.starts.tolist()], int)
    found = idx >= 0
    hit = np.zeros(len(idx), bool)
    plaus = np.zeros(len(idx), bool)
    hit[found] = judged[idx[found]] == target
    plaus[found] = ok[idx[found]]
    return hit, plaus


def compare(output: Heard, source: Heard, target: int, pitch_low: int, bounds: np.ndarray, aligned: bool = True) -> dict:
    """Strength, plausibility (against ``bounds``), content similarity and statistics of one output against its source."""
    counted = source if aligned else None
    hit, ok = window_verdicts(output, counted, target, bounds)
    return {
        "hits": int(hit.sum()),
        "hits_by_judge": {name: int(window_verdicts(output, counted, target, bounds, votes)[0].sum())
                          for name, votes in output.votes.items()},
        "plausible": int(ok.sum()),
        "plausible_hits": int((hit & ok).sum()),
        "windows": len(hit),
        "chroma_similarity": ms.chroma_similarity(source.roll, source.bar_starts, output.roll, output.bar_starts, pitch_low),
        "melody_f1": ms.melody_f1(source.roll, output.roll),
        "rhythm_similarity": ms.rhythm_similarity(source.roll, output.roll),
        "stats": output.stats,
    }


# ---------------------------------------------------------------- aggregation
def aggregate(records: list[dict], source_stats: list[dict], target_stats: dict[str, float]) -> dict:
    """Pieces of one (system, direction) -> pooled strengths and plausible share, mean similarities and stats, gap closed."""
    windows = sum(r["windows"] for r in records)
    pooled = {k: sum(r[n] for r in records) / windows if windows else float("nan")
              for k, n in (("strength", "hits"), ("plausible_strength", "plausible_hits"), ("plausible_share", "plausible"))}
    stats = {k: ms.nanmean([r["stats"][k] for r in records]) for k in ms.STAT_NAMES}
    src = {k: ms.nanmean([s[k] for s in source_stats]) for k in ms.STAT_NAMES}
    gaps = {k: ms.gap_closed(src[k], stats[k], target_stats[k]) for k in ms.STAT_NAMES}
    return {
        "pieces": len(records),
        "windows": windows,
        **pooled,
        # each member's verdict alone (the panel's strength needs both): where they part, the judge is unsure
        "strength_by_judge": {name: sum(r["hits_by_judge"][name] for r in records) / windows if windows else float("nan")
                              for name in records[0]["hits_by_judge"]} if records else {},
        "chroma_similarity": ms.nanmean([r["chroma_similarity"] for r in records]),
        "melody_f1": ms.nanmean([r["melody_f1"] for r in records]),
        "rhythm_similarity": ms.nanmean([r["rhythm_similarity"] for r in records]),
        # clipped per statistic: a stat whose source already sat near the target would otherwise dominate
        "gap_closed": ms.nanmean([float(np.clip(g, -1.0, 1.0)) for g in gaps.values()]),
        "gap_closed_by_stat": gaps,
        "stats": stats,
    }


def summarise(directions: dict[str, dict]) -> dict:
    """Macro mean over directions (each direction weighs the same, whatever its piece count)."""
    mean = {k: ms.nanmean([d[k] for d in directions.values()]) for k in SCORES}
    members = next(iter(directions.values()))["strength_by_judge"]
    return mean | {"strength_by_judge": {name: ms.nanmean([d["strength_by_judge"][name] for d in directions.values()])
                                         for name in members}}


# ---------------------------------------------------------------- real test windows
def score_real_windows(index: ShardIndex, vae, classifier, judge, threshold: float, recon_windows: int | None,
                       seed: int) -> tuple[dict, dict[str, np.ndarray]]:
    """Judge and latent classifier on every test window; plausibility bounds per style from them;
    reconstruction (and its plausible share) on a seeded sample of them."""
    test = index.load_split("test")
    styles = index.styles
    spb = index.spec.steps_per_beat
    votes = judge_votes(judge, test.rolls, test.lengths)
    mu = encode_rolls(vae, test.rolls, test.lengths)
    predicted = predict(classifier, torch.from_numpy(mu))
    features = ms.window_features(test.rolls, test.lengths, spb)
    bounds = {s: ms.plausible_bounds(features[test.style == i]) for i, s in enumerate(styles)}
    n = len(test) if recon_windows is None else min(recon_windows, len(test))
    pick = np.sort(np.random.default_rng([seed, 7]).choice(len(test), size=n, replace=False))
    sample = test.take(pick)
    counts, plausible = None, []
    for lo in range(0, n, 256):
        part = sample.take(slice(lo, lo + 256))
        decoded = reconstruct(vae, part.rolls, part.lengths, threshold) > threshold
        counts = add_counts(counts, count_cells(decoded, part.rolls.astype(bool), part.lengths))
        plausible.append(own_style_plausible(ms.window_features(decoded, part.lengths, spb), part.style, bounds, styles))
    rec = scores(counts)
    return {
        "judge": classification_metrics(test.style, agreed(votes), styles)
                 | {"members": {name: classification_metrics(test.style, v, styles) for name, v in votes.items()},
                    # the same windows moved to other keys: a judge of style, not key, keeps its verdicts
                    "other_keys": classification_metrics(test.style, agreed(moved_votes(judge, test, seed)), styles)},
        "latent_classifier": classification_metrics(test.style, predicted, styles),
        "reconstruction": {k: rec[k] for k in ("precision", "recall", "f1", "onset_precision", "onset_recall",
                                                "onset_f1", "windows")}
                          | {"threshold": threshold, "plausible_share": float(np.concatenate(plausible).mean())},
        "plausibility": plausibility_summary(bounds, own_style_plausible(features, test.style, bounds, styles), test.style,
                                             styles),
    }, bounds


def own_style_plausible(features: np.ndarray, style: np.ndarray, bounds: dict[str, np.ndarray],
                        styles: list[str]) -> np.ndarray:
    """(N,) bool: each window plausible for its own style."""
    out = np.zeros(len(features), bool)
    for i, s in enumerate(styles):
        mine = style == i
        out[mine] = ms.plausible(features[mine], bounds[s])
    return out


def plausibility_summary(bounds: dict[str, np.ndarray], real_ok: np.ndarray, style: np.ndarray, styles: list[str]) -> dict:
    """The bounds per style, and the share of real test windows inside them (the ceiling a system can reach)."""
    return {
        "definition": "note_density: onsets per beat of the window; polyphony: mean notes sounding on sounding steps; "
                      "right_hand_share: the right hand's share of the window's notes (onsets, and notes held into "
                      "its first step); left_hand_density: the left hand's onsets per beat of the window; "
                      "plausible: all four inside the 5th-95th percentile of the real test windows of the style",
        "bounds": {s: {f: bounds[s][k].tolist() for k, f in enumerate(ms.WINDOW_FEATURES)} for s in styles},
        "real_test_windows_plausible_share": {s: float(real_ok[style == i].mean()) if (style == i).any() else None
                                              for i, s in enumerate(styles)},
    }


# ---------------------------------------------------------------- the stage
@dataclass(frozen=True)
class EvalPaths:
    shards: Path = layout.SHARDS
    raw: Path = layout.RAW
    splits: Path = layout.SPLITS
    transfers: Path = layout.TRANSFERS
    vae: Path = layout.VAE
    classifier: Path = layout.CLASSIFIER
    judge: Path = layout.JUDGE
    report: Path = layout.REPORT
    metrics: Path = layout.EVAL_METRICS
    curves: Path = layout.TRAIN_CURVES
    settings: Path = layout.TRANSFER_SETTINGS
    sweep: Path = layout.TRANSFER_SWEEP
    curve_csv: Path = layout.STRENGTH_CONTENT


def evaluate(params, paths: EvalPaths = EvalPaths()) -> dict:
    """Run the evaluate stage: writes ``metrics/eval.json`` and ``data/report/``, logs both to MLflow."""
    t0 = time.perf_counter()
    index = ShardIndex.open(paths.shards)
    vae, vae_ckpt = load_vae(paths.vae)
    classifier, _, clf_ckpt = load_classifier(paths.classifier)
    judge, judge_ckpt = load_judge(paths.judge)
    styles = list(index.styles)
    for name, ckpt, stage in (("latent classifier", clf_ckpt, "train_classifier"), ("judge", judge_ckpt, "train_judge")):
        if list(ckpt["styles"]) != styles:
            raise UserError(f"the {name} knows styles {list(ckpt['styles'])}, the shards hold {styles} "
                            f"(re-run `dvc repro {stage}`)")
    spec = vae_spec(vae_ckpt)
    threshold = float(vae_ckpt["threshold"])

    with start_run(params, "evaluate") as run:
        real, bounds = score_real_windows(index, vae, classifier, judge, threshold, params.evaluate.recon_windows,
                                          params.seed)
        log.info("judge on real test windows: accuracy %.3f, balanced %.3f", real["judge"]["accuracy"],
                 real["judge"]["balanced_accuracy"])
        transfers = evaluate_transfers(params, paths, judge, spec, styles, bounds)
        curve = evaluate_curve(paths, transfers["listener"], styles, bounds)
        write_curve_csv(paths.curve_csv, curve)
        metrics = {"styles": styles, **real, **transfers["metrics"],
                   "transfer_settings": chosen_summary(paths.settings)}
        atomic_write_json(paths.metrics, _finite(metrics))
        write_report(paths.report, params, metrics, transfers["listener"], transfers["records"], spec, paths, curve)
        log.info("evaluate: %.1f s", time.perf_counter() - t0)
        run.log_metrics(flat_summary(metrics))
        run.log_artifact(paths.metrics, "metrics")
        run.log_artifact(paths.curve_csv, "metrics")
        run.log_artifacts(paths.report, "report")
    return metrics


Records = dict[tuple[str, Direction], list[dict]]  # (system, direction) -> one record per piece


def evaluate_transfers(params, paths: EvalPaths, judge, spec: RollSpec, styles: list[str],
                       bounds: dict[str, np.ndarray]) -> dict:
    """Hear every transfer of the manifest and its baselines; aggregate per system and direction.

    Plausibility is judged against ``bounds`` of the target style, except for
    the reconstruction, which should keep the source's style.
    """
    rows = read_manifest(paths.transfers / "manifest.csv")
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] != "ok"]
    listener = Listener(judge, spec)
    pieces = select_test_pieces(paths.raw, paths.splits, styles, params.transfer.max_pieces_per_style, params.seed)
    target_stats = style_statistics(listener, paths.raw, pieces)
    recon_of = {r["source_file"]: paths.transfers / r["output_file"] for r in ok if r["method"] == RECONSTRUCTION}
    hearing = Hearing(listener, paths, styles, bounds, pieces, recon_of, params.seed)
    records, sources = hear_transfers(hearing, ok)
    metrics = {
        "transfer": aggregate_systems(records, sources, listener, paths.raw, target_stats),
        "target_stats": target_stats,
        "transfer_outputs": {"ok": len(ok), "failed": len(failed),
                             "pieces_failed": len({r["source_file"] for r in failed})},
    }
    return {"metrics": metrics, "listener": listener, "records": records}


def style_statistics(listener: Listener, raw_dir: Path, pieces: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Per style, the mean music statistics of its test pieces: what a transfer to it should come near."""
    return {style: {k: ms.nanmean([listener.hear(raw_dir / f).stats[k] for f in files]) for k in ms.STAT_NAMES}
            for style, files in pieces.items()}


@dataclass(frozen=True)
class Hearing:
    """Hears one output of a manifest row against the row's source piece (see :func:`evaluate_transfers`)."""

    listener: Listener
    paths: EvalPaths
    styles: list[str]
    bounds: dict[str, np.ndarray]  # plausibility bounds per style
    test_pieces: dict[str, list[str]]  # test files per style: copy_style picks one of the target's
    recon_of: dict[str, Path]  # source file -> its reconstruction
    seed: int

    def record(self, row: dict, output: Path, bounds_style: str, aligned: bool = True) -> dict:
        """``output`` against ``row``'s source piece: the names, the output's path and :func:`compare`'s scores."""
        source = self.listener.hear(self.paths.raw / row["source_file"])
        target = self.styles.index(row["target_style"])
        names = {"file": row["source_file"], "source_style": row["source_style"], "target_style": row["target_style"]}
        heard = self.listener.hear(output)
        return names | {"output": str(output)} | compare(heard, source, target, self.listener.spec.pitch_low,
                                                          self.bounds[bounds_style], aligned)

    def baselines(self, row: dict) -> list[tuple[str, dict]]:
        """(system, record) of the baselines of ``row``'s source piece and direction: the source itself, its
        reconstruction (judged against the source's style) and a seeded test piece of the target style."""
        file, target = row["source_file"], row["target_style"]
        out = [("copy_content", self.record(row, self.paths.raw / file, target))]
        if file in self.recon_of:
            out.append(("reconstruction", self.record(row, self.recon_of[file], row["source_style"])))
        candidates = self.test_pieces.get(target) or []
        if candidates:
            other = random.Random(f"{self.seed}:copy_style:{file}:{target}").choice(candidates)
            out.append(("copy_style", self.record(row, self.paths.raw / other, target, aligned=False)))
        return out


def hear_transfers(hearing: Hearing, ok: list[dict]) -> tuple[Records, dict[Direction, list[str]]]:
    """Records of every method's outputs, and of the baselines once per source piece and direction;
    with the source files of each direction."""
    records: Records = defaultdict(list)
    sources: dict[Direction, list[str]] = defaultdict(list)
    for row in ok:
        if row["method"] not in METHODS:
            continue
        direction = Direction(row["source_style"], row["target_style"])
        output = hearing.paths.transfers / row["output_file"]
        records[(row["method"], direction)].append(hearing.record(row, output, direction.target))
        if row["source_file"] in sources[direction]:
            continue
        sources[direction].append(row["source_file"])
        for system, record in hearing.baselines(row):
            records[(system, direction)].append(record)
    return records, sources


def aggregate_systems(records: Records, sources: dict[Direction, list[str]], listener: Listener, raw_dir: Path,
                      target_stats: dict[str, dict[str, float]]) -> dict[str, dict]:
    """Per system (the methods that ran, then the baselines): :func:`aggregate` per direction and their mean."""
    systems: dict[str, dict] = {}
    for system in (*[m for m in METHODS if any(k[0] == m for k in records)], *BASELINES):
        directions = {}
        for d in sorted(sources, key=attrgetter("key")):  # the order of the text keys, as before
            recs = records.get((system, d), [])
            if recs:
                src_stats = [listener.hear(raw_dir / f).stats for f in sources[d]]
                directions[d.key] = aggregate(recs, src_stats, target_stats[d.target])
        if directions:
            systems[system] = {"mean": summarise(directions), "directions": directions}
    return systems


# ---------------------------------------------------------------- the strength <-> content curve
def chosen_summary(settings_path: Path) -> dict:
    """Per method and direction: the setting tune_transfer chose on validation pieces and its score there."""
    data = _read_settings(settings_path)
    out: dict[str, dict] = {}
    for method, directions in data["selection"].items():
        knob = KNOBS[method]
        out[method] = {d: {"knob": knob, "value": sel["chosen"], "val_score": sel["score"][sel[knob].index(sel["chosen"])],
                           "reached_target": sel["reached_target"],
                           # attribute_search: the cap is chosen on its path moves; as transferred, with neighbour moves
                           **({"val_score_with_neighbours": sel["score_with_neighbours"][sel[knob].index(sel["chosen"])]}
                              if "score_with_neighbours" in sel else {})}
                       for d, sel in directions.items()}
    hold = data["hold_threshold"]
    return {"target_strength": data["target_strength"], "chosen": out,
            "hold_threshold": {k: hold[k] for k in ("value", "val_right_share", "val_restrikes_per_100",
                                                    "val_source_restrikes_per_100")}}


def _read_settings(path: Path) -> dict:
    load_chosen_settings(path)  # a one-line error when missing or foreign
    return json.loads(Path(path).read_text())


def evaluate_curve(paths: EvalPaths, listener: Listener, styles: list[str], bounds: dict[str, np.ndarray]) -> list[dict]:
    """One row per method, direction and grid value of the validation sweep, judged (see :data:`CURVE_COLUMNS`)."""
    if not (paths.sweep / "index.json").exists():
        raise UserError(f"{paths.sweep}: no transfer sweep (run `dvc repro tune_transfer` first)")
    selection = _read_settings(paths.settings)["selection"]
    rows = []
    for method in [m for m in METHODS if m in selection]:
        for direction in sorted(selection[method]):
            sweep = read_sweep(paths.sweep / method / f"{direction}.npz")
            rows += curve_rows(method, direction, sweep, selection[method][direction], listener, styles, bounds, paths.raw)
    return rows


def curve_rows(method: str, direction: str, sweep: dict, selection: dict, listener: Listener, styles: list[str],
               bounds: dict[str, np.ndarray], raw_dir: Path) -> list[dict]:
    """The rows of one method and direction: every grid value's windows judged, plausibility and content kept."""
    target_style = parse_direction(direction, styles).target
    target = styles.index(target_style)
    decoded, lengths = sweep["decoded"], sweep["length"]
    G, N = decoded.shape[:2]
    flat, lens = decoded.reshape(G * N, *decoded.shape[2:]), np.tile(lengths, G)
    hit = (judge_verdicts(listener.judge, flat, lens) == target).reshape(G, N) if N else np.zeros((G, 0), bool)
    ok = ms.plausible(ms.window_features(flat, lens, listener.spec.steps_per_beat), bounds[target_style]).reshape(G, N)
    sources = [listener.hear(raw_dir / f) for f in sweep["files"]]
    chosen = selection["chosen"]
    rows = []
    for g, value in enumerate(sweep["values"].tolist()):
        chroma, melody = piece_content(sweep, decoded[g], sweep["holds"][g], sources, listener.spec.pitch_low)
        rows.append({"method": method, "direction": direction, "knob": KNOBS[method], "value": value,
                     "cli_strength": value / chosen if chosen else float("nan"), "chosen": int(value == chosen),
                     "plausible_strength": _share(hit[g] & ok[g]), "strength": _share(hit[g]),
                     "plausible_share": _share(ok[g]), "chroma_similarity": chroma, "melody_f1": melody,
                     "val_selection_score": selection["score"][g], "windows": int(N)})
    return rows


def piece_content(sweep: dict, decoded: np.ndarray, holds: np.ndarray, sources: list[Heard],
                  pitch_low: int) -> tuple[float, float]:
    """Mean over pieces of chroma similarity and melody F1 between each source and its windows stitched back
    as the transfer stage puts pieces together (:func:`~midistyle.transfer.stitch_tied`)."""
    chroma, melody = [], []
    for i, source in enumerate(sources):
        mine = np.nonzero(sweep["piece"] == i)[0]
        if not len(mine):
            continue
        out = stitch_tied([(int(sweep["start"][j]), int(sweep["length"][j]), decoded[j]) for j in mine], holds[mine],
                          len(source.roll), source.roll.shape[-1])
        chroma.append(ms.chroma_similarity(source.roll, source.bar_starts, out, source.bar_starts, pitch_low))
        melody.append(ms.melody_f1(source.roll, out))
    return ms.nanmean(chroma), ms.nanmean(melody)


def _share(mask: np.ndarray) -> float:
    return float(mask.mean()) if len(mask) else float("nan")


def write_curve_csv(path: Path, rows: list[dict]) -> None:
    """``metrics/strength_content.csv`` (the DVC plot), rounded to 6 digits; empty cells for undefined values."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row[k]) for k in CURVE_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _cell(value):
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.6g}"
    return value


def flat_summary(metrics: dict) -> dict[str, float]:
    """The headline numbers as flat MLflow metric names."""
    out = {
        "judge_test_accuracy": metrics["judge"]["accuracy"],
        "judge_test_balanced_accuracy": metrics["judge"]["balanced_accuracy"],
        "judge_test_other_keys_accuracy": metrics["judge"]["other_keys"]["accuracy"],
        "classifier_test_accuracy": metrics["latent_classifier"]["accuracy"],
        "classifier_test_balanced_accuracy": metrics["latent_classifier"]["balanced_accuracy"],
        "reconstruction_f1": metrics["reconstruction"]["f1"],
    }
    for name, m in metrics["judge"]["members"].items():
        out[f"judge_{name}_test_accuracy"] = m["accuracy"]
    for system, data in metrics["transfer"].items():
        for k, v in data["mean"].items():
            for key, value in (v.items() if isinstance(v, dict) else [(None, v)]):
                out[f"{system}_{k}" + (f"_{key}" if key else "")] = value
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
