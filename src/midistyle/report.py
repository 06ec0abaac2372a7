"""The evaluation report: one static, self-contained HTML folder to read, look at and listen to.

``data/report/index.html`` links only files beside it (pictures, MIDI, audio),
with relative links and no script or style from elsewhere, so the folder can be
opened from disk, copied, or browsed as an MLflow artifact. Sections:

1. the targets at a glance (judge accuracy first: it judges everything else;
   then, per method, *plausible strength* - judged target and plausible - the
   headline, beside plain strength, chroma similarity and melody kept);
2. judge and latent classifier on real test windows, with confusion tables;
3. reconstruction by free decoding, with its plausible share and the
   plausibility bounds per style;
4. transfer strength vs content preservation per method *beside the
   baselines* (copy content, copy style, reconstruction), overall and per
   direction, with a scatter plot of the trade-off;
5. the strength <-> content curve of the validation sweep, with the settings
   chosen per direction;
6. musical statistics of sources, transfers and real target pieces;
7. the VAE's training curves (``metrics/train_vae_curves.csv``);
8. listening: for a few pieces per direction, the piano rolls of source,
   reconstruction and each transfer one above another, the MIDI files and
   audio players (the first ``evaluate.audio_seconds`` seconds).
"""

from __future__ import annotations

import csv
import html
import logging
import re
import shutil
from operator import attrgetter
from pathlib import Path

import numpy as np

from midistyle import audio
from midistyle import musicstats as ms
from midistyle.directions import Direction, parse_direction
from midistyle.fileio import atomic_write_text, staged_dir
from midistyle.pictures import draw_rolls
from midistyle.roll import RollSpec, Timing, roll_to_midi, write_midi
from midistyle.transfer import METHODS

log = logging.getLogger(__name__)

CURVE_MARKERS = {"attribute_vector": "o", "classifier_guided": "s", "attribute_search": "P"}
SYSTEM_LABELS = {
    "attribute_vector": "attribute vector",
    "classifier_guided": "classifier-guided",
    "attribute_search": "attribute search",
    "reconstruction": "baseline: reconstruction",
    "copy_content": "baseline: copy content (source)",
    "copy_style": "baseline: copy style (a real target piece)",
}
SCORE_LABELS = {
    "plausible_strength": "plausible strength",
    "strength": "strength (judge only)",
    "plausible_share": "plausible share",
    "chroma_similarity": "chroma similarity",
    "melody_f1": "melody kept (F1)",
    "rhythm_similarity": "rhythm similarity",
    "gap_closed": "stats gap closed",
}
JUDGE_MEMBERS = {"hands": "reads the two hands", "heard": "reads the hands merged, as a listener hears them"}
TARGETS = {"judge": 0.9, "plausible_strength": 0.8, "chroma_similarity": 0.6}
MAX_ROLL_BARS = 16


# ---------------------------------------------------------------- small HTML helpers
def esc(text) -> str:
    return html.escape(str(text), quote=True)


def num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]], classes: list[str] | None = None, caption: str = "") -> str:
    """Cells are HTML already (escape text with :func:`esc`)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    cap = f"<caption>{caption}</caption>" if caption else ""
    return f'<table>{cap}<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def safe_name(text: str) -> str:
    """A file name safe in URLs and artifact stores."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "piece"


def direction_label(key: str, styles: list[str]) -> str:
    """``source → target`` of a direction's text key (parsed against the style names: they may contain ``_to_``)."""
    return parse_direction(key, styles).label


# ---------------------------------------------------------------- figures
def plot_curves(csv_path: Path, out: Path) -> Path | None:
    """The VAE's training curves (loss, KL, free-decoding F1 on val) from train_vae's CSV; None if absent."""
    from matplotlib.figure import Figure

    if not csv_path.exists():
        return None
    with open(csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return None

    def col(name: str) -> np.ndarray | None:
        if name not in rows[0]:
            return None
        vals = [float(r[name]) if r[name] not in ("", None) else np.nan for r in rows]
        return np.array(vals)

    epoch = col("epoch")
    panels = [("reconstruction loss", ["train_recon", "val_recon"]), ("KL (nats)", ["train_kl", "val_kl"]),
              ("val free decoding", ["val_precision", "val_recall", "val_f1", "val_onset_f1"])]
    panels = [(t, [c for c in cols if col(c) is not None]) for t, cols in panels]
    panels = [(t, cols) for t, cols in panels if cols]
    if epoch is None or not panels:
        return None
    fig = Figure(figsize=(4.2 * len(panels), 3.2), dpi=100, layout="constrained")
    for ax, (title, cols) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for c in cols:
            y = col(c)
            seen = ~np.isnan(y)  # val columns are empty in epochs without a validation (train.eval_every)
            ax.plot(epoch[seen], y[seen], marker="o", markersize=3, label=c)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(out, metadata={"Software": None})
    return out


def plot_tradeoff(metrics: dict, out: Path) -> Path | None:
    """Plausible strength against chroma similarity, one point per system and direction, the means large."""
    from matplotlib.figure import Figure

    systems = metrics["transfer"]
    if not systems:
        return None
    fig = Figure(figsize=(7.5, 4.8), dpi=100, layout="constrained")
    ax = fig.subplots()
    markers = {"attribute_vector": "o", "classifier_guided": "s", "attribute_search": "P", "reconstruction": "^",
               "copy_content": "D", "copy_style": "v"}
    for i, (system, data) in enumerate(systems.items()):
        color = f"C{i}"
        xs = [d["chroma_similarity"] for d in data["directions"].values()]
        ys = [d["plausible_strength"] for d in data["directions"].values()]
        ax.scatter(xs, ys, color=color, alpha=0.35, marker=markers.get(system, "o"), s=25)
        ax.scatter([data["mean"]["chroma_similarity"]], [data["mean"]["plausible_strength"]], color=color,
                   marker=markers.get(system, "o"), s=110, edgecolor="black", label=SYSTEM_LABELS.get(system, system))
    ax.axhline(TARGETS["plausible_strength"], color="0.6", linestyle="--", linewidth=0.8)
    ax.axvline(TARGETS["chroma_similarity"], color="0.6", linestyle="--", linewidth=0.8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("content kept: chroma similarity with the source")
    ax.set_ylabel("plausible strength: judged target and plausible")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.savefig(out, metadata={"Software": None})
    return out


def plot_strength_content(rows: list[dict], styles: list[str], out: Path) -> Path | None:
    """The validation sweep: plausible strength against chroma similarity and against melody F1, one line per
    method and direction, each point labelled with its --strength (1 = the chosen setting, ringed)."""
    from matplotlib.figure import Figure

    if not rows:
        return None
    fig = Figure(figsize=(11, 4.4), dpi=100, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    lines = sorted({(r["method"], r["direction"]) for r in rows})
    for i, (method, direction) in enumerate(lines):
        pts = [r for r in rows if r["method"] == method and r["direction"] == direction]
        label = f"{SYSTEM_LABELS.get(method, method)}: {direction_label(direction, styles)}"
        for ax, x in zip(axes, ("chroma_similarity", "melody_f1")):
            _curve_line(ax, pts, x, f"C{i}", CURVE_MARKERS.get(method, "o"), label)
    for ax, name in zip(axes, ("chroma similarity with the source", "melody kept (top-line F1)")):
        ax.set_xlabel(name)
        ax.set_xlim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("plausible strength (validation pieces)")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.savefig(out, metadata={"Software": None})
    return out


def _curve_line(ax, pts: list[dict], x: str, color: str, marker: str, label: str) -> None:
    xs = [_nan(p[x]) for p in pts]
    ys = [_nan(p["plausible_strength"]) for p in pts]
    ax.plot(xs, ys, color=color, marker=marker, markersize=4, linewidth=1, label=label)
    for p, a, b in zip(pts, xs, ys):
        ax.annotate(f"{p['cli_strength']:.2g}", (a, b), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if p["chosen"]:
            ax.scatter([a], [b], s=120, facecolors="none", edgecolors=color, linewidths=1.5)


def _nan(value) -> float:
    return float("nan") if value is None else float(value)


# ---------------------------------------------------------------- sections
def headline(metrics: dict) -> str:
    """The targets, each with its measured value and whether it is met; per method plausible strength leads."""
    judge = metrics["judge"]["accuracy"]
    systems = metrics["transfer"]
    cards = [_card("judge accuracy on real test windows", judge, judge >= TARGETS["judge"], f"target ≥ {TARGETS['judge']}")]
    for m in METHODS:
        if m in systems:
            cards += method_cards(m, systems)
    return '<div class="cards">' + "".join(cards) + "</div>"


def method_cards(m: str, systems: dict) -> list[str]:
    """Plausible strength (the headline), strength, chroma similarity and melody kept of one method."""
    mean = systems[m]["mean"]

    def base(key: str, names: tuple[str, ...]) -> float:
        return max((systems[b]["mean"][key] for b in names if b in systems and _finite(systems[b]["mean"][key])),
                   default=float("nan"))

    base_ps = base("plausible_strength", ("copy_content", "reconstruction"))
    base_strength = base("strength", ("copy_content", "reconstruction"))
    base_chroma = base("chroma_similarity", ("copy_style",))
    base_melody = base("melody_f1", ("copy_style",))
    ps_ok = _ge(mean["plausible_strength"], TARGETS["plausible_strength"]) and _gt(mean["plausible_strength"], base_ps)
    c_ok = _ge(mean["chroma_similarity"], TARGETS["chroma_similarity"]) and _gt(mean["chroma_similarity"], base_chroma)
    label = SYSTEM_LABELS[m]
    return [
        _card(f"{label}: plausible strength", mean["plausible_strength"], ps_ok,
              f"judged target and plausible; target ≥ {TARGETS['plausible_strength']} and above copy content / "
              f"reconstruction ({num(base_ps)})"),
        _card(f"{label}: strength (judge only)", mean["strength"], _gt(mean["strength"], base_strength),
              f"above copy content / reconstruction ({num(base_strength)}); "
              f"plausible share {num(mean['plausible_share'])}"),
        _card(f"{label}: chroma similarity", mean["chroma_similarity"], c_ok,
              f"target ≥ {TARGETS['chroma_similarity']} and above copy style ({num(base_chroma)})"),
        _card(f"{label}: melody kept", mean["melody_f1"], _gt(mean["melody_f1"], base_melody),
              f"top-line F1 with the source; above copy style ({num(base_melody)})"),
    ]


def _finite(value) -> bool:
    return value is not None and bool(np.isfinite(value))


def _ge(a, b) -> bool:
    return a is not None and np.isfinite(a) and a >= b


def _gt(a, b) -> bool:
    return a is not None and np.isfinite(a) and (not np.isfinite(b) or a > b)


def _card(title: str, value, ok: bool, note: str) -> str:
    badge = '<span class="ok">✔ met</span>' if ok else '<span class="miss">✘ not met</span>'
    return f'<div class="card"><div class="t">{esc(title)}</div><div class="v">{num(value)}</div>{badge}<div class="n">{esc(note)}</div></div>'


def classifier_section(metrics: dict) -> str:
    rows, parts = [], []
    for name, label in (("judge", "judge, both members agreeing (on piano rolls, independent of the VAE)"),
                        ("latent_classifier", "latent classifier (on the VAE's mu)")):
        m = metrics[name]
        rows.append([esc(label), num(m["accuracy"]), num(m["balanced_accuracy"]),
                     num(m.get("other_keys", {}).get("accuracy")), num(m["windows"])])
        parts.append(confusion_table(m, label))
        for member, mm in m.get("members", {}).items():
            rows.append([esc(f"… its member “{member}” ({JUDGE_MEMBERS.get(member, member)})"), num(mm["accuracy"]),
                         num(mm["balanced_accuracy"]), "–", num(mm["windows"])])
    return (table(["model", "accuracy", "balanced accuracy", "accuracy, each window moved to another key",
                   "test windows"], rows) + '<div class="row">' + "".join(parts) + "</div>")


def confusion_table(m: dict, label: str) -> str:
    """Rows: true style; columns: predicted; cells shaded by the row's share."""
    conf = m["confusion"]
    styles = list(conf)
    undecided = m.get("undecided") if any(m.get("undecided", {}).values()) else None
    rows = []
    for true in styles:
        counts = [conf[true][pred] for pred in styles] + ([undecided[true]] if undecided else [])
        total = sum(counts) or 1
        cells = [f"<b>{esc(true)}</b>"]
        for n in counts:
            cells.append(f'<span class="cell" style="background: rgba(31,119,180,{0.08 + 0.8 * n / total:.2f})">'
                         f"{n:,}<small> {n / total:.0%}</small></span>")
        rows.append(cells)
    heads = [esc(s) for s in styles] + (["no verdict (members disagree)"] if undecided else [])
    return '<div class="confusion">' + table(["true \\ judged"] + heads, rows,
                                               caption=f"{esc(label)}: confusion on test windows") + "</div>"


def reconstruction_section(metrics: dict) -> str:
    r = metrics["reconstruction"]
    out = table(["precision", "recall", "F1", "onset precision", "onset recall", "onset F1", "plausible share", "windows",
                 "threshold"],
                [[num(r["precision"]), num(r["recall"]), num(r["f1"]), num(r["onset_precision"]), num(r["onset_recall"]),
                  num(r["onset_f1"]), num(r.get("plausible_share")), num(r["windows"]), num(r["threshold"], 2)]])
    return out + plausibility_table(metrics.get("plausibility"))


def plausibility_table(plaus: dict | None) -> str:
    """The bounds a plausible window lies in, per style, and the share of real test windows inside them."""
    if not plaus:
        return ""
    rows = [[esc(s), f"{num(b['note_density'][0], 2)} – {num(b['note_density'][1], 2)}",
             f"{num(b['polyphony'][0], 2)} – {num(b['polyphony'][1], 2)}",
             f"{num(b['right_hand_share'][0], 2)} – {num(b['right_hand_share'][1], 2)}",
             f"{num(b['left_hand_density'][0], 2)} – {num(b['left_hand_density'][1], 2)}",
             num(plaus["real_test_windows_plausible_share"].get(s))] for s, b in plaus["bounds"].items()]
    note = ('<p class="note">A window is <b>plausible</b> for a style when its note density (onsets per beat), '
            "polyphony (mean notes sounding together on sounding steps), the right hand's share of its notes and the "
            "left hand's onsets per beat all lie inside the 5th–95th percentile of that style's real test windows "
            "(the share keeps a window whose notes have all moved into the left hand, its melody gone, from "
            "passing; the left hand's onsets one whose left hand strikes far more often than the style's). "
            "Reconstructions are held to "
            "the source's style, transfers to the target's. Real windows reach the share in the last column.</p>")
    return note + table(["style", "notes per beat", "notes sounding together", "right hand's share of notes",
                         "left-hand notes per beat", "real test windows plausible"], rows,
                        caption="plausibility bounds")


def systems_table(entries: dict[str, dict], caption: str = "") -> str:
    """Rows: systems; columns: the four scores (best method value in bold)."""
    rows, classes = [], []
    members = list(next(iter(entries.values()), {}).get("strength_by_judge", {}))
    for system, scores in entries.items():
        by_member = scores.get("strength_by_judge", {})
        rows.append([esc(SYSTEM_LABELS.get(system, system))] + [num(scores.get(k)) for k in SCORE_LABELS]
                    + ([" / ".join(num(by_member.get(m)) for m in members)] if members else [])
                    + ([num(scores.get("pieces"))] if "pieces" in scores else []))
        classes.append("baseline" if system not in METHODS else "method")
    header = (["system"] + list(SCORE_LABELS.values())
              + ([f"strength by each judge member alone ({' / '.join(members)})"] if members else [])
              + (["pieces"] if any("pieces" in e for e in entries.values()) else []))
    return table(header, rows, classes, caption)


def transfer_section(metrics: dict, tradeoff: str | None) -> str:
    systems = metrics["transfer"]
    if not systems:
        return "<p>No transfers to evaluate.</p>"
    out = [systems_table({s: d["mean"] for s, d in systems.items()}, "mean over directions")]
    if tradeoff:
        out.append(f'<figure><img src="{tradeoff}" alt="plausible strength against chroma similarity"><figcaption>'
                   "Each small mark is one direction, each large one a system's mean; the dashed lines are the "
                   "targets (plausible strength 0.8, chroma 0.6). Up and to the right is better.</figcaption></figure>")
    directions = sorted({d for data in systems.values() for d in data["directions"]})
    out.append('<div class="grid">')
    for d in directions:
        entries = {s: data["directions"][d] for s, data in systems.items() if d in data["directions"]}
        out.append(systems_table(entries, esc(direction_label(d, metrics["styles"]))))
    out.append("</div>")
    return "".join(out)


def curve_section(metrics: dict, rows: list[dict], picture: str | None) -> str:
    """The settings chosen on validation pieces, and the judged sweep to pick another strength from."""
    settings = metrics.get("transfer_settings", {})
    chosen_rows = [[esc(SYSTEM_LABELS.get(m, m)), esc(direction_label(d, metrics["styles"])), esc(c["knob"]), num(c["value"], 3),
                    num(c["val_score"]), "yes" if c["reached_target"] else "no"]
                   for m, dirs in settings.get("chosen", {}).items() for d, c in dirs.items()]
    out = ['<p class="note">Chosen per direction on validation pieces, never on test, without the judge: the '
           "smallest grid value whose decoded windows, re-encoded by the VAE, the latent classifier assigns to the "
           f"target <em>and</em> that are plausible for it, in a share of at least "
           f"{num(settings.get('target_strength'), 2)}; else the grid value with the highest share. "
           "<code>midistyle transfer --strength 1</code> is this setting; 0.5 is half of it.</p>",
           table(["method", "direction", "setting", "chosen", "val share (re-encoded target × plausible)",
                  "reached"], chosen_rows)]
    if picture:
        out.append(f'<figure><img src="{picture}" alt="plausible strength against content kept, per strength">'
                   "<figcaption>The validation sweep judged by the independent judge: every grid value of each "
                   "method and direction, labelled with its <code>--strength</code> (the chosen one ringed). "
                   "Pick a strength where the line still keeps enough content.</figcaption></figure>")
    if rows:
        cols = ["method", "direction", "knob", "value", "cli_strength", "plausible_strength", "strength",
                "plausible_share", "chroma_similarity", "melody_f1"]
        out.append(table([esc(c) for c in cols], [[esc(r[c]) if isinstance(r[c], str) else num(r[c]) for c in cols]
                                                  for r in rows]))
    return "".join(out)


def stats_section(metrics: dict) -> str:
    systems = metrics["transfer"]
    target_stats = metrics["target_stats"]
    if not systems:
        return ""
    out = ['<div class="grid">']
    directions = sorted({d for data in systems.values() for d in data["directions"]})
    for d in directions:
        target = parse_direction(d, metrics["styles"]).target
        rows, classes = [], []
        for system, data in systems.items():
            if d not in data["directions"]:
                continue
            entry = data["directions"][d]
            rows.append([esc(SYSTEM_LABELS.get(system, system))] + [num(entry["stats"][k], 2) for k in ms.STAT_NAMES]
                        + [num(entry["gap_closed"], 2)])
            classes.append("baseline" if system not in METHODS else "method")
        rows.append([f"real {esc(target)} pieces (target)"] + [num(target_stats[target][k], 2) for k in ms.STAT_NAMES] + [""])
        classes.append("target")
        header = ["system"] + [esc(ms.STAT_LABELS[k]) for k in ms.STAT_NAMES] + ["gap closed"]
        out.append(table(header, rows, classes, esc(direction_label(d, metrics["styles"]))))
    out.append("</div>")
    return "".join(out)


# ---------------------------------------------------------------- listening
def steps_to_seconds(timing: Timing, steps: int, steps_per_beat: int) -> float:
    """Seconds of playing until grid step ``steps``, following the tempo map (:func:`seconds_to_steps` inverted)."""
    tempos = timing.tempos + [(10**9, timing.tempos[-1][1])]
    out = 0.0
    for (step, qpm), (nxt, _) in zip(tempos[:-1], tempos[1:]):
        if steps <= step:
            break
        out += (min(nxt, steps) - step) * 60.0 / (qpm * steps_per_beat)
    return out


def excerpt_start(roll: np.ndarray, bar_starts: list[int]) -> int:
    """The first step of the bar in which the piece first sounds (0 for a silent piece): a report's excerpt
    starts there, so a piece that opens with a long rest is not shown as an empty picture and a silent player."""
    sounding = np.nonzero(roll.any(axis=(1, 2, 3)))[0] if len(roll) else []
    if not len(sounding):
        return 0
    return max([b for b in bar_starts if b <= sounding[0]], default=0)


def seconds_to_steps(timing: Timing, seconds: float, steps_per_beat: int) -> int:
    """The grid step reached after ``seconds`` of playing, following the tempo map."""
    tempos = timing.tempos + [(10**9, timing.tempos[-1][1])]
    elapsed = 0.0
    for (step, qpm), (nxt, _) in zip(tempos[:-1], tempos[1:]):
        span = (nxt - step) * 60.0 / (qpm * steps_per_beat)
        if elapsed + span >= seconds:
            return int(step + (seconds - elapsed) * qpm * steps_per_beat / 60.0)
        elapsed += span
    return 10**9


class MediaWriter:
    """Copies MIDI and renders audio into the report folder, each file once."""

    def __init__(self, root: Path, mode: str, sample_rate: int, seconds: float):
        self.root, self.mode, self.sample_rate, self.seconds = root, mode, sample_rate, seconds
        self.done: dict[tuple[str, str], str | None] = {}

    def midi(self, src: Path, rel: str) -> str:
        key = ("midi", rel)
        if key not in self.done:
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, self.root / rel)
            self.done[key] = rel
        return rel

    def sound(self, midi: Path, rel_base: str, start: float = 0.0) -> str | None:
        """The audio of ``seconds`` of ``midi`` from ``start`` (s)."""
        key = ("audio", rel_base)
        if key not in self.done:
            out = audio.render(midi, self.root / rel_base, self.mode, self.sample_rate, self.seconds, start)
            self.done[key] = out.relative_to(self.root).as_posix() if out else None
        return self.done[key]


def listening_section(root: Path, params, metrics: dict, listener, records: dict, spec: RollSpec, raw_dir: Path) -> str:
    """Pieces per direction: rolls picture, MIDI links and audio players for source, reconstruction, transfers."""
    ep = params.evaluate
    k = ep.report_pieces_per_direction
    if k == 0:
        return "<p>No pieces (evaluate.report_pieces_per_direction is 0).</p>"
    mode = audio.resolve_mode(ep.audio)
    media = MediaWriter(root, mode, ep.sample_rate, ep.audio_seconds)
    methods = [m for m in METHODS if m in metrics["transfer"]]
    directions = sorted({d for (system, d) in records if system in methods}, key=attrgetter("key"))
    bar_steps = spec.bar_steps
    note = {"soundfont": "FluidSynth with a General MIDI piano (soundfont)", "synth": "a plain additive synthesiser",
            "none": "no audio (evaluate.audio: none)"}[mode]
    out = [f'<p class="note">Audio and pictures: {ep.audio_seconds:g} s of each piece from the bar where it first sounds '
           f"(up to {MAX_ROLL_BARS} bars in the picture), rendered with {note}. "
           "The source is played as the model reads it (quantised to the grid, two hands, piano), "
           "the original file is linked too.</p>"]
    for d in directions:
        by_file: dict[str, dict[str, dict]] = {}
        for system in ("copy_content", "reconstruction", *methods):
            for rec in records.get((system, d), []):
                by_file.setdefault(rec["file"], {})[system] = rec
        files = [f for f in by_file if all(m in by_file[f] for m in methods)][:k]
        out.append(f"<h3>{esc(d.label)}</h3>")
        for file in files:
            out.append(_piece_block(root, media, d, file, by_file[file], methods, listener, spec, bar_steps, ep, raw_dir))
    return "".join(out)


def _piece_block(root: Path, media: MediaWriter, direction: Direction, file: str, recs: dict[str, dict], methods: list[str],
                 listener, spec: RollSpec, bar_steps: int, ep, raw_dir: Path) -> str:
    src_style = recs["copy_content"]["source_style"]
    stem = safe_name(Path(file).stem)
    base = f"media/{safe_name(src_style)}/{stem}"
    source = listener.hear(raw_dir / file)
    first = excerpt_start(source.roll, source.bar_starts)  # transfers keep the source's grid, bars and tempo map
    start_s = steps_to_seconds(source.timing, first, spec.steps_per_beat)
    bars_after = [b for b in source.bar_starts if b > first]
    limit = min(seconds_to_steps(source.timing, start_s + ep.audio_seconds, spec.steps_per_beat),
                bars_after[MAX_ROLL_BARS - 1] if len(bars_after) >= MAX_ROLL_BARS else 10**9)
    source_play = root / f"{base}/source-as-read.mid"
    if not source_play.exists():
        write_midi(roll_to_midi(source.roll, spec, source.timing), source_play)
    entries = [("source", recs["copy_content"], media.midi(raw_dir / file, f"{base}/original{Path(file).suffix}"),
                media.sound(source_play, f"{base}/source", start_s))]
    if "reconstruction" in recs:
        p = Path(recs["reconstruction"]["output"])
        entries.append(("reconstruction", recs["reconstruction"], media.midi(p, f"{base}/reconstruction.mid"),
                        media.sound(p, f"{base}/reconstruction", start_s)))
    target = direction.target
    for m in methods:
        p = Path(recs[m]["output"])
        name = f"{m}_to_{safe_name(target)}"
        entries.append((m, recs[m], media.midi(p, f"{base}/{name}.mid"), media.sound(p, f"{base}/{name}", start_s)))
    panels = []
    for label, rec, _, _ in entries:
        roll = listener.hear(Path(rec["output"])).roll if label != "source" else source.roll
        title = "source" if label == "source" else SYSTEM_LABELS.get(label, label)
        panels.append((f"{title}", _crop(roll, first, limit, spec)))
    img = f"img/{safe_name(direction.key)}__{stem}.png"
    draw_rolls(panels, root / img, pitch_low=spec.pitch_low, steps_per_bar=bar_steps,
               title=f"{Path(file).name}: {direction.label}"
                     + (f" (from bar {source.bar_starts.index(first) + 1}, step {first})" if first else ""))
    rows = []
    for label, rec, midi_rel, audio_rel in entries:
        player = (f'<audio controls preload="none" src="{esc(audio_rel)}"></audio>' if audio_rel
                  else '<span class="muted">silent</span>' if ep.audio != "none" else "")
        share = (lambda k: rec[k] / rec["windows"] if rec["windows"] else float("nan"))
        title = "source" if label == "source" else SYSTEM_LABELS.get(label, label)
        rows.append([esc(title), player, f'<a href="{esc(midi_rel)}">MIDI</a>', num(share("plausible_hits")),
                     num(share("hits")), num(share("plausible")), num(rec["chroma_similarity"]), num(rec["melody_f1"]),
                     num(rec["rhythm_similarity"])])
    return (f'<div class="piece"><h4>{esc(Path(file).name)} <small>({esc(src_style)})</small></h4>'
            f'<img src="{esc(img)}" alt="piano rolls of {esc(Path(file).name)}" loading="eager">'
            + table(["", "listen", "file", "judged target &amp; plausible", "judged target", "plausible", "chroma sim.",
                     "melody F1", "rhythm sim."], rows) + "</div>")


def _crop(roll: np.ndarray, first: int, limit: int, spec: RollSpec) -> np.ndarray:
    """Steps ``first`` .. ``limit`` of ``roll`` (at least one step; a window of silence for an empty roll)."""
    if len(roll) <= first:
        return np.zeros((spec.window_steps, 2, 2, spec.n_pitches), bool)
    return roll[first: max(first + 1, min(len(roll), limit))]


# ---------------------------------------------------------------- the page
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
main{max-width:1280px;margin:0 auto;padding:24px 32px 64px}
h1{font-size:1.7rem;margin:.2rem 0}h2{margin-top:2.4rem;border-bottom:2px solid #d8dde6;padding-bottom:.3rem}
h3{margin-top:1.8rem}h4{margin:.2rem 0 .6rem}p.lead{color:#4a5568;margin-top:.2rem}
.note{color:#4a5568;font-size:.92rem}.muted{color:#8a94a6}
table{border-collapse:collapse;background:#fff;margin:.6rem 0 1rem;font-size:.9rem;box-shadow:0 1px 2px #0001}
caption{text-align:left;font-weight:600;padding:.3rem 0}
th,td{padding:.35rem .7rem;border-bottom:1px solid #e5e8ee;text-align:right;vertical-align:middle}
th:first-child,td:first-child{text-align:left}th{background:#eef1f6;font-weight:600}
tr.baseline td{color:#5a6577;font-style:italic}tr.target td{background:#f3f8ee}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{background:#fff;border-radius:8px;padding:12px 16px;min-width:210px;
box-shadow:0 1px 3px #0002;flex:1}.card .t{font-size:.85rem;color:#4a5568}.card .v{font-size:1.8rem;font-weight:650}
.card .n{font-size:.75rem;color:#6b7486;margin-top:4px}.ok{color:#1f7a3a;font-weight:600}.miss{color:#b3261e;font-weight:600}
.grid{display:flex;flex-wrap:wrap;gap:0 24px}.row{display:flex;flex-wrap:wrap;gap:24px}
.cell{display:inline-block;min-width:5.5em;padding:2px 6px;border-radius:3px}.cell small{color:#333a}
figure{margin:1rem 0}figure img,.piece img{max-width:100%;background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002}
figcaption{font-size:.85rem;color:#4a5568}.piece{background:#fff;border-radius:8px;padding:12px 16px;margin:14px 0;
box-shadow:0 1px 3px #0002}.piece table{box-shadow:none}audio{height:32px;width:300px}
nav a{margin-right:14px}
"""

# Marks <body data-images="loaded"> once every picture has decoded (or "broken"): the browser test reads it.
IMAGE_CHECK = """
(function(){function check(){var imgs=[].slice.call(document.images);
if(imgs.some(function(i){return !i.complete;})){return setTimeout(check,50);}
document.body.setAttribute('data-images',imgs.every(function(i){return i.naturalWidth>0;})?'loaded':'broken');}
window.addEventListener('load',check);})();
"""


def write_report(report_dir: str | Path, params, metrics: dict, listener, records: dict, spec: RollSpec, paths,
                 curve: list[dict] | None = None) -> Path:
    """Build the report in ``<report_dir>.partial`` and move it into place; returns index.html.
    ``curve``: the rows of ``metrics/strength_content.csv``."""
    report_dir = Path(report_dir)
    with staged_dir(report_dir) as tmp:
        (tmp / "img").mkdir()
        curves = plot_curves(Path(paths.curves), tmp / "img" / "training_curves.png")
        tradeoff = plot_tradeoff(metrics, tmp / "img" / "tradeoff.png")
        sweep = plot_strength_content(curve or [], metrics["styles"], tmp / "img" / "strength_content.png")
        listen = listening_section(tmp, params, metrics, listener, records, spec, Path(paths.raw))
        sweep_html = curve_section(metrics, curve or [], "img/strength_content.png" if sweep else None)
        page = render_page(metrics, params, curves is not None, tradeoff is not None, listen, sweep_html)
        atomic_write_text(tmp / "index.html", page)
    return report_dir / "index.html"


def render_page(metrics: dict, params, has_curves: bool, has_tradeoff: bool, listen: str, sweep: str = "") -> str:
    styles = ", ".join(metrics["styles"])
    outputs = metrics.get("transfer_outputs", {})
    curves = ('<figure><img src="img/training_curves.png" alt="training curves of the VAE"></figure>' if has_curves
              else '<p class="muted">No training curves (metrics/train_vae_curves.csv not found).</p>')
    sections = [
        ("targets", "At a glance", headline(metrics)
         + '<p class="note">The judge is a pair of networks trained on real piano rolls only, one reading the two '
           "hands and one the hands merged (a listener cannot hear which hand plays a note); a window is judged a "
           "style only when both say it. Both learn from windows moved to every key, so they judge style, not the "
           "keys a style's pieces happen to be written in. <b>Plausible "
           "strength</b> is the share of a transfer's windows that the judge assigns to the target style <em>and</em> whose "
           "note density, polyphony, right hand's share of notes and left-hand notes per beat lie inside the target's real "
           "range (5th–95th percentile), so clutter, or a melody gone into the left hand, cannot pass; strength is the judge's verdict alone. Content is compared with the source bar by bar (chroma), "
           "by the right hand's top line (melody kept) and step by step (onsets).</p>"),
        ("judge", "Judge and latent classifier on real test windows", classifier_section(metrics)),
        ("reconstruction", "Reconstruction (free decoding from z = mu, test windows)", reconstruction_section(metrics)),
        ("transfer", "Transfer strength and content preservation",
         transfer_section(metrics, "img/tradeoff.png" if has_tradeoff else None)
         + f'<p class="note">Outputs evaluated: {num(outputs.get("ok", 0))}; failed in the transfer stage: '
           f'{num(outputs.get("failed", 0))} (pieces: {num(outputs.get("pieces_failed", 0))}).</p>'),
        ("strength", "Strength ↔ content (validation sweep)", sweep),
        ("stats", "Musical statistics", '<p class="note">Means over pieces. "Gap closed": the share of the distance '
         "between source and real target pieces that the output covered (1 = reached the target, 0 = no closer, "
         "negative = further away), each statistic's clipped to [−1, 1], then averaged.</p>" + stats_section(metrics)),
        ("curves", "Training curves of the VAE", curves),
        ("listen", "Listen and look", listen),
    ]
    nav = "".join(f'<a href="#{sid}">{esc(title.split(" (")[0])}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{esc(title)}</h2>{content}</section>' for sid, title, content in sections)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>midistyle report: {esc(styles)}</title><style>{CSS}</style></head>
<body><main><h1>midistyle: style transfer report</h1>
<p class="lead">Styles: {esc(styles)} · data profile: {esc(params.data.profile)} · seed {params.seed} ·
methods: {esc(", ".join(params.transfer.methods))} (strength chosen per direction on validation pieces:
<a href="#strength">strength ↔ content</a>)</p>
<nav>{nav}</nav>{body}</main><script>{IMAGE_CHECK}</script></body></html>
"""
