"""The reconstruction ablation: a queued grid of DVC experiments and the table it gives.

Each configuration changes one thing of the default model (``params.yaml``) and
runs the train_vae stage (and extract, where the window changes) as a named
``dvc exp run`` in DVC's queue, so every run is also an MLflow run::

    python -m midistyle.ablation run              # queue the design grid, run it (JOBS=2 at a time), write the tables
    python -m midistyle.ablation run --grid long  # the training grid at the default's full budget
    python -m midistyle.ablation table            # only the tables, from `dvc exp show --json`

The table (``docs/ablation.md``) gives, for the test windows decoded freely from
z = mu: sounding F1, onset F1, own-z minus other-z F1, note-density and
polyphony ratios of reconstructions to sources, the KL in bits per window and
the training minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# One budget for the whole design grid (6 epochs, one thread), so the rows compare at equal cost. The grid was
# run before training windows were transposed, and keeps that off so that its rows stay as they were.
BUDGET = ("train.epochs=6", "train.threads=1", "train.transpose=[0,0]")
AR = "model.autoregressive=true"  # the grid's reference decoder; every row but abl-nonar sets it explicitly
GRID: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("abl-default", "reference: 2-bar window, hierarchical autoregressive decoder (512), off/onset/hold, "
                    "beat steps, β 0.02, z 128", (AR,)),
    ("abl-nonar", "decoder not autoregressive (z and the clock only) — **the default since this table**",
     ("model.autoregressive=false",)),
    ("abl-flat", "flat decoder (no bar-level conductor)", (AR, "model.decoder=flat")),
    ("abl-bernoulli", "independent sounding/onset Bernoullis with density pos_weight (the old loss)",
     (AR, "model.output=independent", "train.pos_weight=null")),
    ("abl-beta02", "β 0.2 (MusicVAE's KL weight)", (AR, "train.kl_weight=0.2")),
    ("abl-dec256", "decoder state 256 instead of 512", (AR, "model.decoder_hidden=256")),
    ("abl-4bar", "4-bar windows (hop 2 bars)", (AR, "extract.bars_per_window=4", "extract.hop_bars=2")),
)
# The training grid: the model of its day at 24 epochs, the default then (long-default was the committed run itself,
# found in DVC's run cache; the default trains 18 since the budget grid), one change per row. The other rows train on
# one thread each (two run at a time on two cores: two threads each would oversubscribe them several times over); the
# thread count can change a model's last bits: with batch 128 one and two threads gave the same metrics, with batch 64
# they trained two models as far apart as two seeds (docs/ablation.md, batch grid).
# The grids below were run when the default trained 24 epochs: every row keeps that (a row's own setting wins).
EPOCHS_24 = ("train.epochs=24",)
LONG_BUDGET: tuple[str, ...] = EPOCHS_24
ONE_THREAD = "train.threads=1"
LONG_GRID: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("long-default", "24 epochs (the default until the time budget), every training window transposed by -5..+6 "
                     "semitones", ()),
    ("long-notranspose", "no transposition (`train.transpose=[0,0]`)", (ONE_THREAD, "train.transpose=[0,0]")),
    ("long-12ep", "12 epochs (the budget before)", (ONE_THREAD, "train.epochs=12")),
)
# The learning-rate schedule: the whole pipeline (transfers included: they move with any new weights), so the
# rows compare on every quality figure and on time. One thread each, two at a time (see LONG_GRID).
SCHEDULE_GRID: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("sched-cos24", "cosine decay of the learning rate to `train.min_lr`, 24 epochs",
     (ONE_THREAD, "train.lr_schedule=cosine", "train.eval_every=4")),
    ("sched-cos18", "cosine decay, 18 epochs", (ONE_THREAD, "train.lr_schedule=cosine", "train.eval_every=4",
                                                "train.epochs=18")),
)
# The KL weight at the full budget, the whole pipeline: a larger beta keeps fewer bits in z but may leave a latent
# space whose moved points decode to more natural windows (MusicVAE trains with 0.2, MIDI-VAE with 0.1).
BETA_GRID: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("beta-005", "β 0.05", (ONE_THREAD, "train.kl_weight=0.05")),
    ("beta-01", "β 0.1 (MIDI-VAE's)", (ONE_THREAD, "train.kl_weight=0.1")),
)
# Training noise: the default trained from other initial weights and batch orders (train.seed; the data split, the
# classifiers' seeds and every other param unchanged), the whole pipeline, so every figure's spread is measured.
SEED_GRID: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("seed-2", "`train.seed=2`", (ONE_THREAD, "train.seed=2")),
    ("seed-3", "`train.seed=3`", (ONE_THREAD, "train.seed=3")),
)
# The batch size: 128 windows a step run about 1.27x as many windows/s on two cores as 64 (fewer, larger matmuls,
# half the optimiser steps; benchmarks/train_throughput.py --batch-size), which is what the 15-minute budget needs.
# Same epochs and windows, so half the steps: the learning rate as it was and raised by about sqrt(2). Every row sets
# its batch size, so the rows are the same whichever commit they run from.
BATCH_GRID: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("batch-64", "`train.batch_size=64` (the default before this table)", (ONE_THREAD, "train.batch_size=64")),
    ("batch-128", "`train.batch_size=128` (the default since this table)", (ONE_THREAD, "train.batch_size=128")),
    ("batch-128-lr3", "`train.batch_size=128 train.lr=0.003`", (ONE_THREAD, "train.batch_size=128", "train.lr=0.003")),
)
# The time budget: the default `dvc repro` must stay within 15 minutes on 2 CPU cores, and on a slow day of the 2-core
# Xeon it took 16 min 50 s, train_vae 10.5 min of it (24 epochs of 20-26 s). Fewer training windows (epochs; the
# corpus commands set their own) or a smaller decoder state (fewer FLOPs a window; the corpus profile too), measured on
# every quality figure. One thread each, two at a time (see LONG_GRID).
BUDGET_GRID: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("budget-ep20", "`train.epochs=20`", (ONE_THREAD, "train.epochs=20")),
    ("budget-ep18", "`train.epochs=18`", (ONE_THREAD, "train.epochs=18")),
    ("budget-dec384", "`model.decoder_hidden=384`", (ONE_THREAD, "model.decoder_hidden=384", "train.epochs=24")),
    ("budget-dec384-ep20", "`model.decoder_hidden=384 train.epochs=20`",
     (ONE_THREAD, "model.decoder_hidden=384", "train.epochs=20")),
)
# name -> (rows, settings of every row, the stages to run: () for the whole pipeline)
GRIDS = {"design": (GRID, BUDGET, ("train_vae",)), "long": (LONG_GRID, LONG_BUDGET, ("train_vae",)),
         "schedule": (SCHEDULE_GRID, EPOCHS_24, ()), "beta": (BETA_GRID, EPOCHS_24, ()),
         "seeds": (SEED_GRID, EPOCHS_24, ()), "batch": (BATCH_GRID, EPOCHS_24, ()), "budget": (BUDGET_GRID, (), ())}
TRANSFER_COLUMNS = (("search_mean", "attribute_search plausible strength"), ("search_b2r", "baroque → renaissance"),
                    ("search_r2b", "renaissance → baroque"), ("search_gap", "gap closed"))
HAND_WRITTEN = "<!-- the sections below are written by hand; `python -m midistyle.ablation table` keeps them -->"
COLUMNS = (("f1", "F1"), ("onset_f1", "onset F1"), ("own_minus_other", "own − other z F1"),
           ("density_ratio", "density ratio"), ("polyphony_ratio", "polyphony ratio"),
           ("kl_bits_per_window", "KL bits/window"), ("train_minutes", "training min"))
ONE_DECIMAL = ("kl_bits_per_window", "train_minutes")
TABLE = Path("docs/ablation.md")
BEFORE = ("For comparison, the model before this design (4-bar windows, flat autoregressive decoder over 16th steps, "
          "Bernoulli outputs with density `pos_weight`, β = 1, z = 32; 15 epochs of 8,192 windows, main at 7ff2845): "
          "F1 0.390, onset F1 0.215, other-z F1 0.25, reconstructed baroque 16.8 notes per beat and 8.5 sounding "
          "together against 4.6 and 4.0 in the sources, KL about 71 bits per window, 9.7 training minutes.")


def dvc(*args: str, capture: bool = False) -> str:
    exe = Path(sys.executable).with_name("dvc")
    cmd = [str(exe) if exe.exists() else "dvc", *args]
    done = subprocess.run(cmd, check=True, text=True, stdout=subprocess.PIPE if capture else None)
    return done.stdout or ""


def queue_grid(grid: str = "design") -> None:
    rows, budget, stages = GRIDS[grid]
    for name, _, sets in rows:
        settings = {s.split("=", 1)[0]: s for s in (*budget, *sets)}  # a row's own value of a key replaces the grid's
        args = [a for s in settings.values() for a in ("-S", s)]
        dvc("exp", "run", "--queue", "-n", name, *args, *stages)  # upstream stages too, where params change


def run_queue(jobs: int) -> None:
    dvc("queue", "start", "-j", str(jobs))
    time.sleep(5)  # let the workers pick up the queue before polling it
    while any(w in dvc("queue", "status", capture=True) for w in ("Queued", "Running")):
        time.sleep(20)


def experiment_rows(show: list) -> dict[str, dict]:
    """`dvc exp show --json` -> {experiment name: {"params": ..., "metrics": ..., "baseline": commit}} (every rev
    found), and {"@" + commit: {"params": ..., "metrics": ...}} for the commits experiments were run from."""
    found: dict[str, dict] = {}

    def entry(data: dict) -> dict:
        return {"params": (data.get("params") or {}).get("params.yaml", {}).get("data", {}),
                "metrics": {k: v.get("data", {}) for k, v in (data.get("metrics") or {}).items()}}

    def walk(node, baseline: str | None = None) -> None:
        if isinstance(node, dict):
            if node.get("experiments") and node.get("rev") and isinstance(node.get("data"), dict):
                baseline = node["rev"]
                found["@" + baseline] = entry(node["data"])
            if node.get("name") and isinstance(node.get("data"), dict) and node.get("rev") != baseline:
                found[node["name"]] = {**entry(node["data"]), "baseline": baseline}
            for value in node.values():
                walk(value, baseline)
        elif isinstance(node, list):
            for value in node:
                walk(value, baseline)

    walk(show)
    return found


def row_values(metrics: dict) -> dict[str, float] | None:
    train = metrics.get("metrics/train_vae.json") or {}
    test = train.get("test")
    if not test:
        return None
    return {
        "f1": test["f1"], "onset_f1": test["onset_f1"], "own_minus_other": test["f1"] - test["other_f1"],
        "density_ratio": test["density_ratio"], "polyphony_ratio": test["polyphony_ratio"],
        "kl_bits_per_window": test["kl_bits_per_window"],
        "train_minutes": train["timing"]["train_seconds"] / 60,
    }


def transfer_values(metrics: dict) -> dict[str, float] | None:
    search = ((metrics.get("metrics/eval.json") or {}).get("transfer") or {}).get("attribute_search")
    if not search:
        return None
    dirs = search["directions"]
    return {"search_mean": search["mean"]["plausible_strength"],
            "search_b2r": dirs.get("baroque_to_renaissance", {}).get("plausible_strength", float("nan")),
            "search_r2b": dirs.get("renaissance_to_baroque", {}).get("plausible_strength", float("nan")),
            "search_gap": search["mean"]["gap_closed"]}


def render(rows: dict[str, dict], kept: dict[tuple[str, str], str] | None = None) -> str:
    """The generated part of docs/ablation.md from ``rows`` (:func:`experiment_rows`). A row whose experiment this
    repository does not hold (experiments live in one clone's git refs) keeps its line of ``kept``
    (:func:`table_lines`), so a rebuild on another machine does not wipe the rows it cannot see."""
    kept = kept or {}
    lines = [
        "# Reconstruction ablation (default profile, test windows, free decoding from z = μ)",
        "",
        "Rebuild: `python -m midistyle.ablation run` (queues the grid below as `dvc exp run` experiments,",
        f"runs them two at a time, then writes this file; `{' '.join(BUDGET)}` for every row).",
        "Every run is also an MLflow run named after its experiment (`scripts/mlflow-ui`).",
        "Goals (issue 9): F1 ≥ 0.75, onset F1 ≥ 0.6, own − other z F1 ≥ 0.3, density and polyphony ratios in 0.8–1.2.",
        "",
        *table_head(COLUMNS),
    ]
    lines += table_rows(GRID, rows, kept=kept)
    lines += ["", BEFORE]
    lines += section("Training length and transposition (full budget)",
                     "Rebuild: `python -m midistyle.ablation run --grid long` (params.yaml as committed at 24 "
                     "epochs, one change per row; `long-default` was the committed run of its day, restored from "
                     "DVC's run cache).", COLUMNS)
    lines += table_rows(LONG_GRID, rows, kept=kept)
    columns = COLUMNS + TRANSFER_COLUMNS
    lines += section("Learning-rate schedule (full budget, the whole pipeline)",
                     "Rebuild: `python -m midistyle.ablation run --grid schedule` (every stage of each row runs, "
                     "transfers included; `baseline` is the commit the rows were run from, with the constant rate of "
                     "params.yaml). Transfer columns: attribute_search on the test pieces, plausible strength (mean "
                     "and by direction) and the style statistics' gap closed. Training minutes: the rows trained on "
                     "one thread each, two at a time; the baseline on two threads alone.", columns)
    lines += pipeline_rows(SCHEDULE_GRID, rows, "baseline", "constant rate, 24 epochs", columns, kept)
    lines += section("KL weight (full budget, the whole pipeline)",
                     "Rebuild: `python -m midistyle.ablation run --grid beta` (as the schedule grid: every stage of "
                     "each row runs, one thread each, two at a time; `β baseline` is the commit the rows were run "
                     "from, β 0.02). The same columns as the schedule table.", columns)
    lines += pipeline_rows(BETA_GRID, rows, "β baseline", "β 0.02", columns, kept)
    lines += section("Training noise (full budget, the whole pipeline)",
                     "Rebuild: `python -m midistyle.ablation run --grid seeds` (as the schedule grid; every row is the "
                     "default with another `train.seed`: the VAE's initial weights, noise and batch order; the data "
                     "split and the test pieces stay; `seed baseline` is the commit the rows were run from, "
                     "`train.seed` 1234).", columns)
    lines += pipeline_rows(SEED_GRID, rows, "seed baseline", "train.seed 1234", columns, kept)
    lines += section("Batch size (full budget, the whole pipeline)",
                     "Rebuild: `python -m midistyle.ablation run --grid batch` (as the schedule grid; every row sets "
                     "its batch size; `batch baseline` is the commit the rows were run from, two threads alone).",
                     columns)
    lines += pipeline_rows(BATCH_GRID, rows, "batch baseline", "its params.yaml", columns, kept)
    lines += section("Time budget: fewer epochs or a smaller decoder (full budget, the whole pipeline)",
                     "Rebuild: `python -m midistyle.ablation run --grid budget` (as the schedule grid; `budget "
                     "baseline` is the commit the rows were run from, its 24 epochs and 512-unit decoder on two "
                     "threads alone).", columns)
    lines += pipeline_rows(BUDGET_GRID, rows, "budget baseline", "its params.yaml", columns, kept)
    return "\n".join(lines) + "\n"


def table_head(columns) -> list[str]:
    return ["| experiment | change | " + " | ".join(title for _, title in columns) + " |",
            "|---|---|" + "---:|" * len(columns)]


def section(heading: str, rebuild: str, columns) -> list[str]:
    """A generated section's lines up to its table's first row."""
    return ["", f"## {heading}", "", rebuild, "", *table_head(columns)]


def pipeline_rows(grid, rows: dict[str, dict], reference: str, what: str, columns, kept) -> list[str]:
    """A whole-pipeline grid's rows, after a ``reference`` row: the commit its experiments were run from."""
    base = rows.get(grid[0][0], {}).get("baseline")
    title = "\t".join(t for _, t in columns)
    if base:
        ref = ((reference, f"the commit the rows were run from ({base[:7]}): {what}", ()),)
    else:  # no row of the grid here: the reference row as it was, if there was one
        ref = ((reference, "", ()),) if (title, reference) in (kept or {}) else ()
    return table_rows((*ref, *grid), {**rows, reference: rows.get(f"@{base}", {})}, columns, kept)


def table_rows(grid, rows: dict[str, dict], columns=COLUMNS, kept: dict[tuple[str, str], str] | None = None
               ) -> list[str]:
    out = []
    title = "\t".join(t for _, t in columns)
    for name, change, _ in grid:
        metrics = rows.get(name, {}).get("metrics", {})
        values = row_values(metrics)
        if values is None and (title, name) in (kept or {}):
            out.append(kept[(title, name)])
            continue
        if values is not None and columns != COLUMNS:
            values = {**values, **(transfer_values(metrics) or {})}
        cells = [f"{values[key]:.{1 if key in ONE_DECIMAL else 3}f}" if key in values else "not run"
                 for key, _ in columns] if values else ["not run"] * len(columns)
        out.append(f"| `{name}` | {change} | " + " | ".join(cells) + " |")
    return out


def table_lines(text: str) -> dict[tuple[str, str], str]:
    """The measured rows of the generated tables in ``text``: (the table's column titles joined by tabs,
    experiment name) -> the row's line (rows reading "not run" left out)."""
    out: dict[tuple[str, str], str] = {}
    header = ""
    for line in text.split(HAND_WRITTEN, 1)[0].splitlines():
        if line.startswith("| experiment | change | "):
            header = "\t".join(c.strip() for c in line.strip().strip("|").split("|")[2:])
        elif line.startswith("| `") and header and "not run" not in line:
            out[(header, line.split("`")[1])] = line
    return out


def write_table(path: Path = TABLE) -> str:
    """Rewrite the generated tables of ``path``; what follows its HAND_WRITTEN line stays as it is, and so does
    every row whose experiment this clone does not hold (:func:`render`)."""
    rows = experiment_rows(json.loads(dvc("exp", "show", "--all-commits", "--json", capture=True) or "[]"))
    old = path.read_text() if path.exists() else ""
    text = render(rows, table_lines(old))
    if HAND_WRITTEN in old:
        text += "\n" + HAND_WRITTEN + old.split(HAND_WRITTEN, 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="the reconstruction ablation grid as queued DVC experiments")
    ap.add_argument("what", choices=("run", "table"))
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS", 2)))
    ap.add_argument("--grid", choices=tuple(GRIDS), default="design")
    args = ap.parse_args(argv)
    if args.what == "run":
        queue_grid(args.grid)
        run_queue(args.jobs)
    print(write_table())


if __name__ == "__main__":
    main()
