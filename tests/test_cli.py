"""The ``midistyle`` command: transfer, styles, generate, roll, and one-line errors."""

import os
import shutil
import subprocess
import sys

import mido
import pytest
import torch

from midistyle.cli import main
from midistyle.roll import read_piece
from midistyle.transfer import StyleTransfer
from tests.helpers_params import PARAMS
from tests.helpers_style import REPO, one_thread, transfer_settings
from tests.midi_fixtures import piece, to_bytes


@pytest.fixture(scope="module")
def project(style_project):
    """The session's tiny project, on one thread while this module's tests run (restored after)."""
    with one_thread():
        yield style_project


@pytest.fixture
def models(project):
    return ["--vae", str(project.vae), "--classifier", str(project.classifier)]


@pytest.fixture
def chosen(models, project):
    """The models and the transfer settings chosen on validation pieces (for `transfer`)."""
    return [*models, "--settings", str(project.settings)]


@pytest.fixture(autouse=True)
def elsewhere(tmp_path, monkeypatch):
    """Run from an empty folder: no params.yaml, no models/ (the defaults then point at nothing)."""
    monkeypatch.chdir(tmp_path)


def run_main(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_styles(capsys, models):
    code, out, _ = run_main(capsys, "styles", *models)
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == ["busy", "calm"]


def test_transfer_writes_a_piece_at_the_source_tempo(capsys, chosen, project, tmp_path):
    src = project.raw / "busy" / "piece0.mid"
    out = tmp_path / "out.mid"
    code, stdout, _ = run_main(capsys, "transfer", str(src), "--to", "calm", "-o", str(out), *chosen)
    assert code == 0 and out.exists()
    assert "-> calm by attribute_search" in stdout  # the default method
    spec = project.spec
    assert len(read_piece(out, spec).bar_starts) <= len(read_piece(src, spec).bar_starts)
    tempi = [m.tempo for t in mido.MidiFile(out).tracks for m in t if m.type == "set_tempo"]
    assert tempi == [m.tempo for t in mido.MidiFile(src).tracks for m in t if m.type == "set_tempo"]


def test_transfer_options(capsys, chosen, project, tmp_path):
    models = chosen
    src = str(project.raw / "calm" / "piece0.mid")
    code, out, _ = run_main(capsys, "transfer", src, "--to", "busy", "--from", "calm", "--method", "classifier_guided",
                            "--strength", "2", "-o", str(tmp_path / "g.mid"), *models)
    assert code == 0 and "calm (given) -> busy by classifier_guided" in out
    # strength 0 is the plain reconstruction, bit for bit
    run_main(capsys, "transfer", src, "--to", "busy", "--from", "calm", "--strength", "0", "-o", str(tmp_path / "a0.mid"), *models)
    code, out, _ = run_main(capsys, "transfer", src, "--to", "calm", "--from", "calm", "-o", str(tmp_path / "r.mid"), *models)
    assert code == 0 and "by reconstruction" in out
    assert (tmp_path / "a0.mid").read_bytes() == (tmp_path / "r.mid").read_bytes()
    # default output name beside the input
    local = tmp_path / "mine.mid"
    local.write_bytes((project.raw / "calm" / "piece0.mid").read_bytes())
    code, _, _ = run_main(capsys, "transfer", str(local), "--to", "busy", *models)
    assert code == 0 and (tmp_path / "mine.attribute_search.busy.mid").exists()


def test_strength_one_is_the_alpha_chosen_for_the_direction(capsys, chosen, project, tmp_path):
    import json

    from midistyle.transfer import Job, StyleTransfer, load_chosen_settings, write_roll

    alpha = json.loads(project.settings.read_text())["chosen"]["attribute_vector"]["calm_to_busy"]
    src = project.raw / "calm" / "piece0.mid"
    model = StyleTransfer.load(project.vae, project.classifier).use(load_chosen_settings(project.settings))
    piece = read_piece(src, model.spec)
    for strength in (1.0, 0.5):
        cli_out = tmp_path / f"cli{strength}.mid"
        code, _, _ = run_main(capsys, "transfer", str(src), "--to", "busy", "--from", "calm", "--strength", str(strength),
                              "--method", "attribute_vector", "-o", str(cli_out), *chosen)
        assert code == 0
        (roll,) = model.transfer_piece(piece, [Job("attribute_vector", 1, 0, transfer_settings(alpha=alpha * strength))])
        by_hand = write_roll(roll, model.spec, piece.timing, tmp_path / f"hand{strength}.mid")
        assert cli_out.read_bytes() == by_hand.read_bytes()


def test_transfer_without_chosen_settings_is_one_line(capsys, models, project, tmp_path):
    src = str(project.raw / "calm" / "piece0.mid")
    code, _, err = run_main(capsys, "transfer", src, "--to", "busy", "-o", str(tmp_path / "x.mid"), *models)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "models/transfer_settings.json: no chosen transfer settings (run `dvc repro tune_transfer` first)" in err


def test_generate_without_chosen_settings_is_one_line(capsys, models, tmp_path):
    """generate ties its windows with the hold threshold tune_transfer chose, so it reads the settings too."""
    code, _, err = run_main(capsys, "generate", "--style", "calm", "-o", str(tmp_path / "g.mid"), *models)
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "models/transfer_settings.json: no chosen transfer settings (run `dvc repro tune_transfer` first)" in err


def test_generate_is_seeded(capsys, chosen, project, tmp_path):
    a, b, c = (tmp_path / n for n in ("a.mid", "b.mid", "c.mid"))
    for path, seed in ((a, "0"), (b, "0"), (c, "1")):
        code, out, _ = run_main(capsys, "generate", "--style", "calm", "--bars", "6", "--seed", seed, "-o", str(path), *chosen)
        assert code == 0 and "6 bars of calm (seed " in out
    assert a.read_bytes() == b.read_bytes()  # a seed of 0 is a seed
    model = StyleTransfer.load(project.vae, project.classifier)  # the seed picks the latents (a tiny model's
    calm = model.style_index("calm")  # decoder may well write the same notes for both)
    z0, z1 = (model.sample_latents(calm, 3, seed, 0.6) for seed in (0, 1))
    assert torch.equal(z0, model.sample_latents(calm, 3, 0, 0.6)) and not torch.equal(z0, z1)
    mid = mido.MidiFile(a)
    assert mid.length <= 6 * 4 * 60 / 100 + 0.01  # 6 bars of 4/4 at 100 qpm


def test_roll_picture(capsys, project, tmp_path):
    src = str(project.raw / "busy" / "piece0.mid")
    code, out, _ = run_main(capsys, "roll", src, "-o", str(tmp_path / "r.png"), "--bars", "4", "--vae", str(project.vae))
    assert code == 0 and (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "64 steps" in out
    shutil.copy(PARAMS, tmp_path / "params.yaml")  # no trained model: the grid of params.yaml
    code, out, _ = run_main(capsys, "roll", src, "-o", str(tmp_path / "p.png"), "--bars", "4")
    assert code == 0 and "64 steps" in out
    (tmp_path / "params.yaml").unlink()  # neither: no grid is made up
    code, _, err = run_main(capsys, "roll", src, "-o", str(tmp_path / "n.png"))
    assert code == 1 and err.strip() == ("midistyle: error: no piano-roll grid: neither models/vae.pt nor params.yaml "
                                         "exists (name one with --vae or --params)")


@pytest.mark.parametrize("case, match", [
    ("missing", "no such file"),
    ("text", "not_midi"),
    ("silent", "no_notes"),
    ("style", "unknown style 'polka'"),
    ("strength", "--strength: must be a number from 0 to 4, got -1"),
    ("strength_high", "--strength: must be a number from 0 to 4, got 4.5"),
    ("steps", "--steps: must be from 0 to 1000, got 1001"),
    ("steps_from_strength", "asks for 1200 classifier-guided steps, at most 1000"),
    ("folder", "is a folder; -o must name a file to write"),
    ("bars", "--bars: must be from 1 to 512, got 513"),
    ("bars_zero", "--bars: must be from 1 to 512, got 0"),
    ("generate_folder", "is a folder; -o must name a file to write"),
    ("roll_folder", "is a folder; -o must name a file to write"),
])
def test_bad_input_is_one_line(capsys, chosen, project, tmp_path, case, match):
    import json

    models = chosen
    src = project.raw / "calm" / "piece0.mid"
    (tmp_path / "notes.mid").write_text("hello\n")
    (tmp_path / "silent.mid").write_bytes(to_bytes(piece([[]])))
    args = {
        "missing": ["transfer", str(tmp_path / "nope.mid"), "--to", "busy"],
        "text": ["transfer", str(tmp_path / "notes.mid"), "--to", "busy"],
        "silent": ["transfer", str(tmp_path / "silent.mid"), "--to", "busy"],
        "style": ["transfer", str(src), "--to", "polka"],
        "strength": ["transfer", str(src), "--to", "busy", "--strength", "-1"],
        "strength_high": ["transfer", str(src), "--to", "busy", "--strength", "4.5"],
        "steps": ["transfer", str(src), "--to", "busy", "--method", "classifier_guided", "--steps", "1001"],
        "steps_from_strength": ["transfer", str(src), "--to", "busy", "--from", "calm", "--method", "classifier_guided",
                                "--strength", "3", "--settings", str(tmp_path / "many-steps.json")],
        "folder": ["transfer", str(src), "--to", "busy", "-o", str(tmp_path / "out")],
        "bars": ["generate", "--style", "calm", "--bars", "513", "-o", str(tmp_path / "g.mid")],
        "bars_zero": ["generate", "--style", "calm", "--bars", "0", "-o", str(tmp_path / "g.mid")],
        "generate_folder": ["generate", "--style", "calm", "-o", str(tmp_path / "out")],
        "roll_folder": ["roll", str(src), "-o", str(tmp_path / "out")],
    }[case]
    (tmp_path / "out").mkdir()
    many = json.loads(project.settings.read_text())
    many["chosen"]["classifier_guided"]["calm_to_busy"] = 400
    (tmp_path / "many-steps.json").write_text(json.dumps(many))
    if args[0] != "transfer" or "--settings" in args:
        models = models[: models.index("--settings")] if args[0] != "roll" else []
    code, out, err = run_main(capsys, *args, *models)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and match in err and "Traceback" not in err
    if "folder" in case:
        assert err.strip() == f"midistyle: error: {tmp_path / 'out'}: is a folder; -o must name a file to write"


def test_a_checkpoint_of_another_kind_is_one_line(capsys, project, tmp_path):
    src = str(project.raw / "calm" / "piece0.mid")
    swapped = ["--vae", str(project.judge), "--classifier", str(project.classifier)]
    code, _, err = run_main(capsys, "transfer", src, "--to", "busy", "-o", str(tmp_path / "x.mid"), *swapped)
    assert code == 1 and err.strip() == f"midistyle: error: {project.judge}: not a vae checkpoint"
    swapped = ["--vae", str(project.vae), "--classifier", str(project.vae)]
    code, _, err = run_main(capsys, "styles", *swapped)
    assert code == 1 and err.strip() == f"midistyle: error: {project.vae}: not a latent_classifier checkpoint"


def test_no_trained_model_yet(capsys, tmp_path):
    code, _, err = run_main(capsys, "styles")
    assert code == 1 and "no trained model" in err and "dvc repro" in err
    code, _, err = run_main(capsys, "generate", "--style", "x", "-o", str(tmp_path / "x.mid"))
    assert code == 1 and "no trained model" in err


def test_error_from_a_real_process_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-m", "midistyle.cli", "roll", str(tmp_path / "missing.mid"), "-o", "x.png"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == f"midistyle: error: {tmp_path / 'missing.mid'}: no such file"
    usage = subprocess.run([sys.executable, "-m", "midistyle.cli", "transfer"], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=120)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
