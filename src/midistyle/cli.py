"""The ``midistyle`` command: style transfer and generation for one's own MIDI files.

    midistyle styles                                  the styles the trained model knows
    midistyle transfer IN.mid --to jazz [-o OUT.mid]  rewrite a piece in another style
    midistyle generate --style jazz -o OUT.mid        new music from a style's region of the latent space
    midistyle roll IN.mid -o roll.png                 draw a piano roll (the grid of the VAE or params.yaml)

Models default to the pipeline's outputs (``models/vae.pt``,
``models/latent_classifier.pt``); ``--vae``/``--classifier`` point elsewhere.
How far a transfer moves is the setting the pipeline chose for that direction
on validation pieces (``models/transfer_settings.json``, ``--settings``);
``--strength`` multiplies it (1 = as chosen, at most :data:`MAX_STRENGTH`).
Bounded inputs: ``--strength`` <= 4, ``--steps`` <= 1000, ``generate --bars``
<= 512. Bad input gives one line on stderr and exit status 1 (2 for bad usage,
as argparse does), never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

import numpy as np

from midistyle import layout
from midistyle.config import MAX_GUIDED_STEPS, MAX_STRENGTH, TRANSFER_METHODS
from midistyle.errors import UserError

VAE_DEFAULT = str(layout.VAE)
CLASSIFIER_DEFAULT = str(layout.CLASSIFIER)
SETTINGS_DEFAULT = str(layout.TRANSFER_SETTINGS)
PARAMS_DEFAULT = "params.yaml"
MAX_BARS = 512  # generate --bars


def _models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vae", default=VAE_DEFAULT, help=f"VAE checkpoint (default {VAE_DEFAULT})")
    parser.add_argument("--classifier", default=CLASSIFIER_DEFAULT,
                        help=f"latent classifier checkpoint (default {CLASSIFIER_DEFAULT})")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="midistyle", description="Style transfer for two-hand piano MIDI.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("styles", help="list the styles the trained model knows")
    _models(p)

    p = sub.add_parser("transfer", help="rewrite a MIDI file in another style")
    p.add_argument("input", help="a MIDI file")
    p.add_argument("--to", required=True, dest="target", help="target style (see `midistyle styles`)")
    p.add_argument("--from", dest="source", default=None,
                   help="the piece's style (default: what the latent classifier hears in it)")
    p.add_argument("--method", choices=TRANSFER_METHODS, default="attribute_search",
                   help="how to move (default attribute_search: the best plausible strength on the default profile)")
    p.add_argument("--strength", type=float, default=1.0,
                   help="times the alpha (attribute vector; attribute search: the largest it may use, and under 1 "
                        "its neighbour steps too) or step count (classifier-guided) chosen for this "
                        f"direction on validation pieces: 1 = as chosen (default), 0 = plain reconstruction, "
                        f"at most {MAX_STRENGTH:g}")
    p.add_argument("--steps", type=int, default=None,
                   help=f"classifier-guided: exactly this many steps instead (0 to {MAX_GUIDED_STEPS})")
    p.add_argument("-o", "--output", default=None, help="output MIDI (default: IN.<method>.<style>.mid beside IN)")
    p.add_argument("--settings", default=SETTINGS_DEFAULT,
                   help=f"the settings chosen per direction by `dvc repro tune_transfer` (default {SETTINGS_DEFAULT})")
    _models(p)

    p = sub.add_parser("generate", help="new music in a style, decoded from latents sampled in its region")
    p.add_argument("--style", required=True)
    p.add_argument("--bars", type=int, default=16, help=f"length in bars (1 to {MAX_BARS}, default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tempo", type=float, default=100.0, help="quarter notes per minute (default 100)")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--settings", default=SETTINGS_DEFAULT,
                   help=f"the settings chosen by `dvc repro tune_transfer`: how windows are tied together "
                        f"(default {SETTINGS_DEFAULT})")
    _models(p)

    p = sub.add_parser("roll", help="draw the piano roll of a MIDI file (PNG)")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--bars", type=int, default=None, help="only the first BARS bars")
    p.add_argument("--vae", default=VAE_DEFAULT,
                   help="take the grid (pitch range, steps per beat) from this checkpoint if it exists")
    p.add_argument("--params", default=PARAMS_DEFAULT,
                   help=f"else from this params file's extract section (default {PARAMS_DEFAULT})")
    return ap


# ---------------------------------------------------------------- commands
def cmd_styles(args) -> None:
    from midistyle.classifier import load_classifier

    _, regions, ckpt = load_classifier(args.classifier)
    for style, n in zip(ckpt["styles"], regions.windows):
        print(f"{style}\t{n} training windows")


def _check_input(path: str) -> Path:
    """The input path, or a one-line error when it is missing or a folder."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"{p}: no such file")
    if p.is_dir():
        raise UserError(f"{p}: is a folder, not a MIDI file")
    return p


def _read_input(path: str, spec):
    from midistyle.roll import read_piece

    return read_piece(_check_input(path), spec)


def _check_output(path: str | Path) -> Path:
    """The output path, or a one-line error naming it when it is a folder."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a folder; -o must name a file to write")
    return path


def _settings(args, chosen, method: str, source: str, target: str):
    """The direction's chosen settings, scaled by ``--strength`` (and ``--steps``), within their bounds."""
    settings = chosen.for_direction(method, source, target).with_strength(args.strength)
    if args.steps is not None:
        settings = settings.with_steps(args.steps)
    return settings.check_steps()


def _source_style(args, model, piece) -> tuple[int, str]:
    """The piece's style index (given, or heard by the latent classifier) and how it was found."""
    if args.source is not None:
        return model.style_index(args.source), f"{args.source} (given)"
    source, probs = model.detect_style(piece)
    return source, f"{model.styles[source]} (heard: " + ", ".join(f"{s} {p:.0%}" for s, p in zip(model.styles, probs)) + ")"


def cmd_transfer(args) -> None:
    from midistyle.transfer import (RECONSTRUCTION, Job, StyleTransfer, check_step_count, check_strength,
                                    load_chosen_settings, write_roll)

    check_strength(args.strength)  # a bad --strength or --steps fails before any model is read
    if args.steps is not None:
        check_step_count(args.steps)
    out = _check_output(args.output) if args.output else Path(args.input).with_suffix(f".{args.method}.{args.target}.mid")
    model = StyleTransfer.load(args.vae, args.classifier)
    target = model.style_index(args.target)
    chosen = load_chosen_settings(args.settings, model.styles)
    model.use(chosen)
    piece = _read_input(args.input, model.spec)
    source, note = _source_style(args, model, piece)
    method = args.method if source != target else RECONSTRUCTION
    settings = _settings(args, chosen, method, model.styles[source], args.target)
    (roll,) = model.transfer_piece(piece, [Job(method, source, target, settings)])
    write_roll(roll, model.spec, piece.timing, _check_output(out))
    notes = int(roll[:, :, 1].sum())
    print(f"{args.input}: {note} -> {args.target} by {method}: {out} ({notes} notes)")
    if notes == 0:
        print("warning: the transfer came out silent; try a lower --strength", file=sys.stderr)


def cmd_generate(args) -> None:
    from midistyle.transfer import StyleTransfer, load_chosen_settings, write_roll

    if not 1 <= args.bars <= MAX_BARS:
        raise UserError(f"--bars: must be from 1 to {MAX_BARS}, got {args.bars}")
    if not 0 < args.tempo < float("inf"):
        raise UserError(f"--tempo: must be > 0, got {args.tempo}")
    _check_output(args.output)
    model = StyleTransfer.load(args.vae, args.classifier)
    model.use(load_chosen_settings(args.settings, model.styles))  # windows are stitched as the transfers are
    style = model.style_index(args.style)
    roll, timing = model.generate(style, args.bars, args.seed, tempo=args.tempo)
    write_roll(roll, model.spec, timing, args.output)
    print(f"{args.output}: {args.bars} bars of {args.style} (seed {args.seed}, {int(roll[:, :, 1].sum())} notes)")


def _roll_grid(args):
    """The grid of ``roll``: the VAE checkpoint's if it exists, else params.yaml's extract section."""
    from midistyle.roll import RollSpec

    if Path(args.vae).exists():
        from midistyle.model import load_vae, vae_spec

        return vae_spec(load_vae(args.vae)[1])
    if Path(args.params).exists():
        from midistyle.config import load_params

        return RollSpec.from_params(load_params(args.params).extract)
    raise UserError(f"no piano-roll grid: neither {args.vae} nor {args.params} exists "
                    "(name one with --vae or --params)")


def cmd_roll(args) -> None:
    from midistyle.pictures import draw_rolls

    _check_input(args.input)
    _check_output(args.output)
    if Path(args.output).suffix.lower() not in (".png", ".svg", ".pdf"):
        raise UserError(f"{args.output}: the picture's name must end in .png, .svg or .pdf")
    if args.bars is not None and args.bars < 1:
        raise UserError(f"--bars: must be at least 1, got {args.bars}")
    spec = _roll_grid(args)
    piece = _read_input(args.input, spec)
    roll = piece.roll
    if args.bars is not None and len(piece.bar_starts) > args.bars:
        roll = roll[: piece.bar_starts[args.bars]]
    draw_rolls([(Path(args.input).name, roll)], args.output, pitch_low=spec.pitch_low,
               steps_per_bar=spec.bar_steps)
    print(f"{args.output}: {len(roll)} steps, {int(np.asarray(roll)[:, :, 1].sum())} notes")


COMMANDS = {"styles": cmd_styles, "transfer": cmd_transfer, "generate": cmd_generate, "roll": cmd_roll}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns (and as a script exits with) 0, 1 for a user error, 2 for bad usage."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    warnings.filterwarnings("ignore", message="Tempo, Key or Time signature", category=RuntimeWarning)
    try:
        COMMANDS[args.command](args)
    except UserError as exc:  # RollError is a UserError too
        print(f"midistyle: error: {exc}", file=sys.stderr)
        return 1
    except (IsADirectoryError, PermissionError, FileNotFoundError) as exc:
        print(f"midistyle: error: {exc.filename or ''}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("midistyle: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
