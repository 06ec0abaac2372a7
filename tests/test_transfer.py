"""Whole-piece style transfer: windows, latent moves, the transfer stage's outputs and its failure handling."""

import copy
import csv
import dataclasses
import shutil

import mido
import numpy as np
import pytest
import torch

from midistyle.errors import UserError
from midistyle.roll import LEFT, RIGHT, iter_windows, midi_to_roll, read_piece
from midistyle.transfer import (
    METHODS,
    MANIFEST_COLUMNS,
    RECONSTRUCTION,
    Job,
    SearchSpace,
    StyleTransfer,
    output_path,
    piece_name,
    piece_windows,
    audible_windows,
    pick_candidates,
    transfer_stage,
)
from midistyle.musicstats import WINDOW_FEATURES, window_features, window_melody_f1
from tests.helpers_params import repo_spec
from tests.helpers_style import STYLES, Project, one_thread, tiny_params, transfer_settings
from tests.midi_fixtures import tick_piece


@pytest.fixture(scope="module")
def project(style_project):
    """The session's tiny project, on one thread while this module's tests run (restored after)."""
    with one_thread():
        yield style_project


@pytest.fixture(scope="module")
def model(project):
    return StyleTransfer.load(project.vae, project.classifier)


def _manifest(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# ---------------------------------------------------------------- windows
def test_piece_windows_are_the_non_overlapping_windows_in_four_four():
    spec = repo_spec(bars_per_window=4)
    notes = [(60 + i % 12, i * 480, i * 480 + 240) for i in range(4 * 10)]  # 10 bars of quarter notes
    piece = midi_to_roll(mido_pm(tick_piece(notes)), spec)
    got = [(w.start, w.length) for w in piece_windows(piece, spec)]
    want = [(w.start, w.length) for w in iter_windows(piece, spec, hop_bars=spec.bars_per_window, keep_empty=True)]
    assert got == want == [(0, 64), (64, 64), (128, 30)]  # the last note ends half a beat early


def test_piece_windows_skip_no_bar_in_a_long_metre():
    spec = repo_spec(bars_per_window=4)  # window = 64 steps: only two bars of 12/8 (24 steps each) fit
    notes = [(60, i * 240, i * 240 + 120) for i in range(6 * 2 * 8)]  # 8 bars of 12/8 eighths
    piece = midi_to_roll(mido_pm(tick_piece(notes, meters=[(0, 12, 8)])), spec)
    windows = piece_windows(piece, spec)
    assert [w.start for w in windows] == [0, 48, 96, 144]
    assert sum(w.length for w in windows) == len(piece.roll)  # every step of the piece is in a window
    assert all(b.start == a.start + a.length for a, b in zip(windows, windows[1:]))
    # a plain hop of bars_per_window would have skipped bars 3-4 and 7-8
    plain = list(iter_windows(piece, spec, hop_bars=spec.bars_per_window, keep_empty=True))
    assert sum(w.length for w in plain) < len(piece.roll)


def mido_pm(data: bytes):
    import io

    import pretty_midi

    return pretty_midi.PrettyMIDI(io.BytesIO(data))


# ---------------------------------------------------------------- latent moves
def test_attribute_vector_moves_by_alpha_times_the_style_difference(model):
    mu = torch.randn(5, model.regions.means.shape[1])
    src, tgt = torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long)
    z = model.move(mu, "attribute_vector", src, tgt, transfer_settings(alpha=0.7))
    np.testing.assert_allclose((z - mu).numpy(), (0.7 * (model.regions.means[1] - model.regions.means[0])).expand(5, -1).numpy(),
                               atol=1e-6)
    assert torch.equal(model.move(mu, "attribute_vector", src, tgt, transfer_settings(alpha=0.0)), mu)
    assert torch.equal(model.move(mu, RECONSTRUCTION, src, tgt, transfer_settings()), mu)


def test_classifier_guided_raises_the_target_probability_and_stays_near_when_told(model):
    torch.manual_seed(0)
    mu = model.regions.means[0] + 0.1 * torch.randn(6, model.regions.means.shape[1])
    src, tgt = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.long)
    free = model.move(mu, "classifier_guided", src, tgt, transfer_settings(guided_steps=30, guided_lr=0.1, guided_distance_weight=0.0))
    near = model.move(mu, "classifier_guided", src, tgt, transfer_settings(guided_steps=30, guided_lr=0.1, guided_distance_weight=100.0))
    before, after = model.style_probs(mu)[:, 1], model.style_probs(free)[:, 1]
    assert (after > before).all()
    assert (near - mu).norm(dim=1).max() < (free - mu).norm(dim=1).min()
    none = model.move(mu, "classifier_guided", src, tgt, transfer_settings(guided_steps=0))
    assert torch.equal(none, mu)


def test_strength_scales_the_chosen_alpha_and_guided_steps_within_bounds():
    s = transfer_settings(alpha=2.0, guided_steps=50).with_strength(0.5)
    assert s.alpha == 1.0 and s.guided_steps == 25
    assert transfer_settings(alpha=1.5).with_strength(4).alpha == 6.0  # the documented maximum
    for bad in (-1, 4.01, float("nan"), float("inf")):
        with pytest.raises(UserError, match="--strength: must be a number from 0 to 4"):
            transfer_settings().with_strength(bad)
    assert transfer_settings(guided_steps=50).with_steps(1000).guided_steps == 1000
    with pytest.raises(UserError, match="--steps: must be from 0 to 1000, got 1001"):
        transfer_settings().with_steps(1001)
    with pytest.raises(UserError, match="asks for 1200 classifier-guided steps, at most 1000"):
        transfer_settings(guided_steps=400).with_strength(3).check_steps()


def test_guided_path_snapshots_equal_separate_runs(model):
    torch.manual_seed(1)
    mu = model.regions.means[0] + 0.1 * torch.randn(4, model.regions.means.shape[1])
    tgt = torch.ones(4, dtype=torch.long)
    s = transfer_settings(guided_lr=0.1, guided_distance_weight=0.01)
    z0, z3, z7 = model.guided_path(mu, tgt, s, [0, 3, 7])
    assert torch.equal(z0, mu)
    for steps, z in ((3, z3), (7, z7)):
        alone = model.move(mu, "classifier_guided", torch.zeros(4, dtype=torch.long), tgt,
                           transfer_settings(guided_steps=steps, guided_lr=0.1, guided_distance_weight=0.01))
        assert torch.allclose(z, alone)


def test_pieces_transferred_together_equal_pieces_transferred_alone(model, project):
    pieces = [read_piece(project.raw / style / "piece1.mid", model.spec) for style in STYLES]
    jobs = [Job(RECONSTRUCTION, 0, 0, transfer_settings()), Job("attribute_vector", 0, 1, transfer_settings(alpha=1.5))]
    together = model.transfer_pieces(pieces, jobs)
    for piece, rolls in zip(pieces, together):
        for a, b in zip(rolls, model.transfer_piece(piece, jobs)):
            assert a.shape == piece.roll.shape
            assert (a != b).mean() < 1e-3  # the same up to float rounding of another batch size


def test_unknown_method_and_style_are_user_errors(model):
    mu = torch.zeros(1, model.regions.means.shape[1])
    idx = torch.zeros(1, dtype=torch.long)
    with pytest.raises(UserError, match="unknown transfer method"):
        model.move(mu, "magic", idx, idx, transfer_settings())
    with pytest.raises(UserError, match="unknown style 'polka'.*busy, calm"):
        model.style_index("polka")


def test_transfer_piece_keeps_length_and_silent_windows(model, project):
    piece = read_piece(project.raw / "calm" / "piece0.mid", model.spec)
    piece.roll[64:128] = False  # a silent second window
    rolls = model.transfer_piece(piece, [Job(RECONSTRUCTION, 1, 1, transfer_settings()),
                                          Job("attribute_vector", 1, 0, transfer_settings(alpha=1.0))])
    for roll in rolls:
        assert roll.shape == piece.roll.shape and roll.dtype == bool
        assert not roll[64:128].any()


# ---------------------------------------------------------------- names
def test_output_names():
    assert piece_name("jazz/sub/Tune A.mid", "jazz") == "sub__Tune A.mid"
    assert output_path("attribute_vector", "jazz", "pop", "jazz/x.mid") == "attribute_vector/jazz_to_pop/x.mid"
    assert output_path(RECONSTRUCTION, "jazz", "jazz", "jazz/x.mid") == "reconstruction/jazz/x.mid"


# ---------------------------------------------------------------- the stage
def test_stage_writes_every_direction_method_and_reconstruction(project):
    rows = _manifest(project.transfers / "manifest.csv")
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert all(r["status"] == "ok" and r["error"] == "" for r in rows)
    sources = {(r["source_style"], r["source_file"]) for r in rows}
    assert {s for s, _ in sources} == set(STYLES)
    for style, file in sources:
        mine = {(r["method"], r["target_style"]) for r in rows if r["source_file"] == file}
        others = [t for t in STYLES if t != style]
        assert mine == {(RECONSTRUCTION, style)} | {(m, t) for m in METHODS for t in others}
    for r in rows:
        out = project.transfers / r["output_file"]
        assert out.exists()
        src = mido.MidiFile(project.raw / r["source_file"])
        dst = mido.MidiFile(out)
        assert _tempi(dst) == _tempi(src)  # written with the source's tempo map
        assert int(r["windows"]) > 0
    assert (project.transfers / "reconstruction" / "calm").is_dir()
    assert (project.transfers / "attribute_vector" / "busy_to_calm").is_dir()


def _tempi(mid: mido.MidiFile) -> list[int]:
    return [m.tempo for track in mid.tracks for m in track if m.type == "set_tempo"]


def _copy(project: Project, dst) -> Project:
    shutil.copytree(project.root, dst)
    return Project(dst, project.params)


def test_a_failing_piece_is_recorded_and_the_batch_goes_on(project, tmp_path):
    p = _copy(project, tmp_path / "p")
    bad = next(r["source_file"] for r in _manifest(p.transfers / "manifest.csv") if r["source_style"] == "calm")
    (p.raw / bad).write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk\xff\xff\xff\xffgarbage")
    params = tiny_params(transfer={"max_failed_share": 0.5})
    summary = transfer_stage(params, p.raw, p.splits, p.vae, p.classifier, p.transfers, p.settings)
    assert summary["pieces_failed"] == 1
    rows = _manifest(p.transfers / "manifest.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert failed and all(r["source_file"] == bad and "corrupt" in r["error"] for r in failed)
    assert any(r["status"] == "ok" and r["source_style"] == "busy" for r in rows)

    with pytest.raises(UserError, match="1 of 2 pieces failed"):
        transfer_stage(tiny_params(), p.raw, p.splits, p.vae, p.classifier, tmp_path / "out", p.settings)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_max_pieces_per_style_caps_the_work(project, tmp_path):
    import json

    splits = json.loads(project.splits.read_text())
    # put every calm piece in test: the cap must pick one
    calm = [f for f in splits["train"] + splits["val"] if f.startswith("calm/")]
    splits["test"] += calm
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    summary = transfer_stage(tiny_params(transfer={"max_pieces_per_style": 1, "methods": ["attribute_vector"]}),
                             project.raw, tmp_path / "splits.json", project.vae, project.classifier, tmp_path / "t",
                             project.settings)
    assert summary["pieces_per_style"] == {"busy": 1, "calm": 1}
    rows = _manifest(tmp_path / "t" / "manifest.csv")
    assert {r["method"] for r in rows} == {RECONSTRUCTION, "attribute_vector"}
    assert len(rows) == 4


def test_missing_models_are_user_errors(project, tmp_path):
    with pytest.raises(UserError, match="no trained model"):
        transfer_stage(tiny_params(), project.raw, project.splits, tmp_path / "vae.pt", project.classifier, tmp_path / "t",
                       project.settings)
    with pytest.raises(UserError, match="no trained model"):
        transfer_stage(tiny_params(), project.raw, project.splits, project.vae, tmp_path / "c.pt", tmp_path / "t",
                       project.settings)
    with pytest.raises(UserError, match="no chosen transfer settings.*dvc repro tune_transfer"):
        transfer_stage(tiny_params(), project.raw, project.splits, project.vae, project.classifier, tmp_path / "t",
                       tmp_path / "settings.json")


# ---------------------------------------------------------------- attribute_search
def _space(model, bounds=((0.0, 100.0),) * 4, min_probability=0.5, medians=(2.0,) * 4,
           paths=("mean_shift",), right_hand=(0.0,), neighbour_steps=(), neighbours=1, knn=4, min_knn_share=0.0,
           melody_weight=0.0):
    return SearchSpace((0.5, 1.0, 2.0), paths, (0.0, -0.15, 0.15), right_hand, {s: bounds for s in model.styles},
                       min_probability, {s: medians for s in model.styles}, neighbour_steps, neighbours, knn,
                       min_knn_share, melody_weight)


def test_search_space_tries_alphas_up_to_the_cap_and_thresholds_nearest_first(model):
    space = _space(model)
    assert space.alphas(1.0) == [0.5, 1.0]
    assert space.alphas(1.5) == [0.5, 1.0, 1.5]  # --strength can ask for a cap between grid values
    assert space.alphas(0.0) == [0.0]
    assert space.thresholds(0.45) == [(0.45, 0.45), (0.3, 0.3), (0.6, 0.6)]  # (right hand, left hand)
    assert space.thresholds(0.9) == [(0.9, 0.9), (0.75, 0.75), (0.95, 0.95)]  # kept inside 0.05 .. 0.95
    # right-hand offsets outside, nearest 0 first, on top of each threshold offset; repeats after clipping dropped
    hands = _space(model, right_hand=(-0.3, 0.0, -0.15))
    assert hands.thresholds(0.45) == [(0.45, 0.45), (0.3, 0.3), (0.6, 0.6), (0.3, 0.45), (0.15, 0.3), (0.45, 0.6),
                                      (0.15, 0.45), (0.05, 0.3), (0.3, 0.6)]
    assert hands.per_alpha(0.45) == 9
    assert _space(model, right_hand=(0.0, -0.3)).thresholds(0.2) == [(0.2, 0.2), (0.05, 0.05), (0.35, 0.35),
                                                                        (0.05, 0.2), (0.05, 0.35)]


def test_decoding_at_several_thresholds_runs_the_decoder_once_and_gives_free_decoding_bit_for_bit(model, monkeypatch):
    import dataclasses
    import midistyle.transfer as transfer_module
    from midistyle.model import StyleVAE
    monkeypatch.setattr(transfer_module, "DECODE_BATCH", 3)  # several batches, the last one short
    z = torch.randn(7, model.vae.cfg.latent_size)
    thresholds = [0.45, 0.3, 0.6, 0.2, 0.1]
    W = model.spec.window_steps

    def generated(vae, th):  # the reference: StyleVAE.generate, the free decoding training validates
        return (vae.generate(z, steps=W, threshold=th) > th).numpy()

    assert not model.vae.cfg.autoregressive  # params.yaml's decoder
    calls = []
    probabilities = model.vae.probabilities
    monkeypatch.setattr(model.vae, "probabilities", lambda *a, **k: calls.append(1) or probabilities(*a, **k))
    got, holds = model.decode_windows(z, thresholds)
    assert len(calls) == 3  # once per batch, not per threshold
    for th, dec in zip(thresholds, got):
        assert dec.dtype == bool and dec.any() and np.array_equal(dec, generated(model.vae, th))
    # a (right hand, left hand) pair: each hand as the whole roll decoded at its own threshold
    (pair,), _ = model.decode_windows(z, [(0.2, 0.6)])
    assert np.array_equal(pair[:, :, RIGHT], generated(model.vae, 0.2)[:, :, RIGHT])
    assert np.array_equal(pair[:, :, LEFT], generated(model.vae, 0.6)[:, :, LEFT])
    empty, no_holds = model.decode_windows(z[:0], thresholds)
    assert [d.shape for d in empty] == [(0, W, 2, 2, model.spec.n_pitches)] * 5
    assert no_holds.shape == (0, 2, model.spec.n_pitches)
    # holds: the first frame's cells whose P(onset | sounding) does not pass the onset threshold
    assert np.array_equal(holds, (model.vae.probabilities(z, W)[1][:, 0] <= model.vae.onset_threshold).numpy())
    assert holds.any() and not holds.all()
    # an autoregressive decoder's probabilities depend on its own frames: it decodes once per threshold
    ar = StyleVAE(dataclasses.replace(model.vae.cfg, autoregressive=True))
    with pytest.raises(ValueError, match="autoregressive"):
        ar.probabilities(z)
    monkeypatch.setattr(model, "vae", ar)
    rolls, holds = model.decode_windows(z, thresholds)
    for th, dec in zip(thresholds, rolls):
        assert np.array_equal(dec, generated(ar, th))
    (pair,), _ = model.decode_windows(z, [(0.2, 0.6)])  # its hands' thresholds reach the frames it reads back
    cut = torch.tensor([[0.2], [0.6]])
    assert np.array_equal(pair, (ar.generate(z, steps=W, threshold=cut) > cut[..., None]).numpy())
    # its first frame reads no decided frame: teacher forcing on silence gives the free decoding's probabilities
    first = ar.cell_probs(ar.decode(z, torch.zeros(len(z), W, 2, 2, model.spec.n_pitches))[:, :1])
    torch.testing.assert_close(first[0][:, 0], ar.generate(z, steps=W)[:, 0, :, 0])
    assert np.array_equal(holds, (first[1][:, 0] <= ar.onset_threshold).numpy())


def test_pick_candidates_takes_the_gentlest_alpha_that_passes_and_there_the_most_typical_texture():
    from midistyle.transfer import pick_candidates, texture_miss
    decoded = np.arange(6 * 5).reshape(6, 5)  # candidate c, window n -> 5c + n; 3 alphas x 2 thresholds
    miss = np.array([[0.5, 0.0, 2.0, 1.0, 0.0],   # alpha 0
                     [0.0, 0.0, 1.5, 1.0, 0.0],
                     [0.0, 3.0, 1.7, 1.0, 0.0],   # alpha 1
                     [0.0, 0.0, 1.9, 1.0, 0.0],
                     [0.0, 0.0, 1.6, 1.0, 0.0],   # alpha 2
                     [0.0, 0.0, 1.8, 1.0, 0.0]])
    distance = np.array([[9.0, 0.7, 0.0, 0.0, 0.3],
                         [0.2, 0.2, 0.0, 0.0, 0.3],
                         [0.1, 0.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 0.0, 0.0]])
    # window 0: only the second threshold passes at alpha 0; window 1: both pass there, the nearer one wins
    # (never the more typical candidates of a stronger alpha); window 2: none passes, the least miss (1.5);
    # window 3: none passes, the first of equal misses; window 4: a tie in distance keeps the first
    assert pick_candidates(decoded, miss, distance, 2).tolist() == [5, 6, 7, 3, 4]
    bounds = np.array([[1.0, 3.0], [2.0, 4.0]])
    np.testing.assert_allclose(texture_miss(np.array([[2.0, 3.0], [4.0, 1.0], [np.nan, 3.0]]), bounds), [0.0, 1.0, 1.0])
    # windows every candidate of which misses by inf (silent) keep the first: what the search keeps too
    assert pick_candidates(np.arange(2)[:, None].repeat(2, 1), np.array([[np.inf, 1.0], [np.inf, 0.5]]),
                           np.zeros((2, 2)), 1).tolist() == [0, 1]


def test_attribute_search_keeps_the_gentlest_passing_candidate(model, project, monkeypatch):
    piece = read_piece(project.raw / "calm" / "piece0.mid", model.spec)
    windows = [w for w in piece_windows(piece, model.spec) if w.notes]
    mu, lengths = model.encode(windows), np.array([w.length for w in windows])
    s, t = model.style_index("calm"), model.style_index("busy")
    wide = _space(model)
    job = Job("attribute_search", s, t, transfer_settings(alpha=2.0, search=wide))
    decoded, miss, distance, holds = model.search_candidates(mu, lengths, s, t, wide.alphas(2.0), wide)
    searched, searched_holds = model.search(mu, lengths, job)
    assert np.array_equal(searched, pick_candidates(decoded, miss, distance, 3))  # the search is the one rule
    assert np.array_equal(searched_holds, pick_candidates(holds, miss, distance, 3))  # each window's own holds
    # lazily (only the misses that decide): the same choice per alpha, from fewer re-encoded windows
    encoded = []
    encode_arrays = model.encode_arrays
    monkeypatch.setattr(model, "encode_arrays", lambda rolls, lens: encoded.append(len(rolls)) or encode_arrays(rolls, lens))
    counts = {False: 0, True: 0}
    for space, a in [(sp, a) for sp in (wide, _space(model, ((50.0, 50.0),) * 4)) for a in wide.alphas(2.0)]:
        for lazy in (False, True):  # a band every candidate passes, and one none passes
            encoded.clear()
            block = model.candidates(mu, lengths, s, t, a, space, lazy=lazy)
            counts[lazy] += sum(encoded)
            m, d = np.stack([b[1] for b in block]), np.stack([b[2] for b in block])
            picks = pick_candidates(np.arange(len(block))[:, None].repeat(len(windows), 1), m, d, len(block))
            if lazy:
                assert np.array_equal(picks, full_picks) and np.array_equal(m == 0, full_m == 0)
            full_picks, full_m = picks, m
    assert counts[True] < counts[False]  # some candidates were never re-encoded
    monkeypatch.undo()
    # tune_transfer's sweep over caps: each cap's windows are what the search under that cap writes
    from types import SimpleNamespace
    from midistyle.tuning import search_sweep
    swept, swept_holds, _ = search_sweep(model, SimpleNamespace(length=lengths, rolls=np.stack([w.roll for w in windows])),
                                         mu, s, t, [0.5, 1.0, 2.0], wide)
    for g, cap in enumerate([0.5, 1.0, 2.0]):
        job = Job("attribute_search", s, t, transfer_settings(alpha=cap, search=wide))
        rolls, cap_holds = model.search(mu, lengths, job)
        assert np.array_equal(swept[g], rolls) and np.array_equal(swept_holds[g], cap_holds)
    feats = window_features(decoded.reshape(-1, *decoded.shape[2:]), np.tile(lengths, len(decoded)),
                            model.spec.steps_per_beat).reshape(*miss.shape, len(WINDOW_FEATURES))
    np.testing.assert_allclose(distance, np.nan_to_num(np.abs(feats - 2.0).sum(-1) / 100.0, nan=np.inf))
    assert (miss == 0).any()
    for n in range(len(windows)):
        if (miss[:, n] == 0).any():  # passing: re-encoded it is the target style, its texture inside the band
            c = next(c for c in range(len(miss)) if np.array_equal(searched[n], decoded[c, n]) and miss[c, n] == 0)
            assert (miss[: c // 3 * 3, n] > 0).all()  # no gentler alpha passed
    # no texture can pass an empty band: each window falls back to its least-missing candidate
    none = _space(model, ((50.0, 50.0),) * 4)
    d2, m2, _, _ = model.search_candidates(mu, lengths, s, t, none.alphas(2.0), none)
    assert (m2 > 0).all()
    got, _ = model.search(mu, lengths, Job("attribute_search", s, t, transfer_settings(alpha=2.0, search=none)))
    assert np.array_equal(got, d2[np.argmin(m2, axis=0), np.arange(len(windows))])


def test_attribute_search_asks_the_latent_classifier_for_at_least_min_probability(model, project):
    piece = read_piece(project.raw / "calm" / "piece0.mid", model.spec)
    windows = [w for w in piece_windows(piece, model.spec) if w.notes]
    mu, lengths = model.encode(windows), np.array([w.length for w in windows])
    s, t = model.style_index("calm"), model.style_index("busy")
    loose, strict = _space(model), _space(model, min_probability=0.999999)
    _, miss_loose, _, _ = model.search_candidates(mu, lengths, s, t, loose.alphas(2.0), loose)
    dec, miss_strict, _, _ = model.search_candidates(mu, lengths, s, t, strict.alphas(2.0), strict)
    probs = np.stack([model.style_probs(model.encode_arrays(d, lengths))[:, t] for d in dec])  # (C, N)
    assert (probs < 0.999999).any() and (probs >= 0.5).any()  # the floor turns some passing candidates away
    # the texture band is wide open: the miss is 1 exactly where the target's probability is under the floor
    np.testing.assert_array_equal(miss_strict, (probs < 0.999999).astype(float))
    assert (miss_strict >= miss_loose).all() and (miss_strict > miss_loose).any()
    assert SearchSpace.from_json(strict.to_json()) == strict


def test_knn_share_counts_the_target_among_the_nearest_training_latents_each_style_weighted_equally(model):
    from midistyle.classifier import StyleRegions
    Z = model.regions.means.shape[1]
    far = torch.zeros(Z)
    far[0] = 100.0
    # style 0: four latents at the origin; style 1: one latent at the origin and one far away (weight 1/2 each)
    bank = [torch.zeros(4, Z), torch.stack([torch.zeros(Z), far])]
    probe = copy.copy(model)  # the same models, another sample of training latents
    probe.regions, probe._bank = StyleRegions(model.regions.means, model.regions.chol, [4, 2], bank), None
    z = torch.stack([torch.zeros(Z), far])
    # the 5 nearest of the origin: 4 of style 0 (1/4 each) and 1 of style 1 (1/2): style 1 holds 1/2 / (1 + 1/2)
    np.testing.assert_allclose(probe.knn_share(z[:1], 1, 5), [1 / 3], rtol=1e-6)
    np.testing.assert_allclose(probe.knn_share(z[1:], 1, 1), [1.0])  # far away, its one nearest is style 1's
    np.testing.assert_allclose(probe.knn_share(z, 0, 6), [1.0 / 2.0, 1.0 / 2.0], rtol=1e-6)  # every sample votes


def test_attribute_search_asks_the_nearest_training_latents_for_at_least_min_knn_share(model, project, monkeypatch):
    piece = read_piece(project.raw / "calm" / "piece0.mid", model.spec)
    windows = [w for w in piece_windows(piece, model.spec) if w.notes]
    mu, lengths = model.encode(windows), np.array([w.length for w in windows])
    s, t = model.style_index("calm"), model.style_index("busy")
    loose, strict = _space(model), _space(model, knn=8, min_knn_share=0.75)
    _, miss_loose, _, _ = model.search_candidates(mu, lengths, s, t, loose.alphas(2.0), loose)
    voters = []  # how many candidates each call of knn_share is asked about
    knn_share = model.knn_share
    monkeypatch.setattr(model, "knn_share", lambda z, target, k: voters.append(len(z)) or knn_share(z, target, k))
    dec, miss_strict, _, _ = model.search_candidates(mu, lengths, s, t, strict.alphas(2.0), strict)
    monkeypatch.undo()
    probs = np.stack([model.style_probs(model.encode_arrays(d, lengths))[:, t] for d in dec])  # (C, N)
    share = np.stack([model.knn_share(model.encode_arrays(d, lengths), t, 8) for d in dec])  # (C, N)
    # the texture band is wide open: the miss is 1 exactly where either vote refuses the target
    np.testing.assert_array_equal(miss_strict, ((probs < 0.5) | (share < 0.75)).astype(float))
    assert ((share < 0.75) & (probs >= 0.5)).any()  # the neighbours turn away some the classifier passes
    assert sum(voters) == (probs >= 0.5).sum() < probs.size  # asked only where the classifier passes the target
    assert (miss_strict >= miss_loose).all()
    assert SearchSpace.from_json(strict.to_json()) == strict


def test_the_transport_map_carries_one_style_gaussian_onto_the_other():
    from midistyle.classifier import StyleRegions
    rng = np.random.default_rng(7)
    Z = 6
    covs = []
    for _ in range(2):
        a = rng.normal(size=(Z, Z))
        covs.append(a @ a.T + 0.5 * np.eye(Z))
    regions = StyleRegions(torch.tensor(rng.normal(size=(2, Z)), dtype=torch.float32),
                           torch.tensor(np.stack([np.linalg.cholesky(c) for c in covs]), dtype=torch.float32), [10, 10], [])
    A = regions.transport(0, 1).double().numpy()
    np.testing.assert_allclose(A, A.T, atol=1e-5)  # the Monge map between Gaussians is symmetric ...
    assert (np.linalg.eigvalsh(A) > 0).all()  # ... positive definite
    np.testing.assert_allclose(A @ covs[0] @ A.T, covs[1], rtol=1e-4, atol=1e-4)  # and pushes S_s onto S_t
    np.testing.assert_allclose(regions.transport(1, 0).double().numpy(), np.linalg.inv(A), rtol=1e-4, atol=1e-4)
    same = StyleRegions(regions.means, regions.chol[[0, 0]], [10, 10], [])
    np.testing.assert_allclose(same.transport(0, 1).numpy(), np.eye(Z), atol=1e-4)  # equal spreads: a pure shift


def test_attribute_search_tries_every_path_at_every_alpha(model, project):
    piece = read_piece(project.raw / "calm" / "piece0.mid", model.spec)
    windows = [w for w in piece_windows(piece, model.spec) if w.notes]
    mu, lengths = model.encode(windows), np.array([w.length for w in windows])
    s, t = model.style_index("calm"), model.style_index("busy")
    both = _space(model, paths=("mean_shift", "transport"))
    assert both.per_alpha(model.threshold) == 6 and _space(model).per_alpha(model.threshold) == 3
    shift, moved = model.path_vectors(mu, s, t, both.paths)
    means = model.regions.means
    assert torch.equal(shift, (means[t] - means[s]).expand_as(mu))  # the attribute vector
    transported = means[t] + (mu - means[s]) @ model.regions.transport(s, t).T  # T(mu): alpha 1 lands there
    torch.testing.assert_close(mu + moved, transported, rtol=1e-5, atol=1e-5)
    decoded, miss, distance, _ = model.search_candidates(mu, lengths, s, t, [1.0], both)
    thresholds = both.thresholds(model.threshold)
    inside = np.arange(model.spec.window_steps)[:, None, None, None] < lengths[:, None, None, None, None]
    for p, d in enumerate((shift, moved)):  # paths outside, thresholds inside
        for i, dec in enumerate(model.decode_windows(mu + d, thresholds)[0]):
            assert np.array_equal(decoded[p * len(thresholds) + i], dec & inside)
    job = Job("attribute_search", s, t, transfer_settings(alpha=1.0, search=both))
    assert np.array_equal(model.search(mu, lengths, job)[0], pick_candidates(decoded, miss, distance, 6))
    assert SearchSpace.from_json(both.to_json()) == both
    with pytest.raises(ValueError, match="search paths"):
        SearchSpace.from_json({**both.to_json(), "paths": ["sideways"]})
    # settings written before the right-hand share joined the texture (density and polyphony only) are refused
    old = {**both.to_json(), "texture_bounds": {s: [[0, 9], [1, 5]] for s in model.styles},
           "texture_medians": {s: [2, 3] for s in model.styles}}
    with pytest.raises(ValueError, match="texture of other features"):
        SearchSpace.from_json(old)


def test_a_melody_weight_picks_the_passing_candidate_that_keeps_more_of_the_source_top_line(model, project):
    piece = read_piece(project.raw / "calm" / "piece0.mid", model.spec)
    windows = [w for w in piece_windows(piece, model.spec) if w.notes]
    mu, lengths = model.encode(windows), np.array([w.length for w in windows])
    sources = np.stack([w.roll for w in windows])
    s, t = model.style_index("calm"), model.style_index("busy")
    plain, weighted = _space(model), _space(model, melody_weight=5.0)
    decoded, miss, distance, _ = model.search_candidates(mu, lengths, s, t, plain.alphas(2.0), plain)
    kept = window_melody_f1(sources[None], decoded)  # (C, N)
    _, miss_w, distance_w, _ = model.search_candidates(mu, lengths, s, t, plain.alphas(2.0), weighted, sources=sources)
    assert np.array_equal(miss_w, miss) and np.allclose(distance_w, distance - 5.0 * kept)
    job = Job("attribute_search", s, t, transfer_settings(alpha=2.0, search=weighted))
    got, _ = model.search(mu, lengths, job, sources=sources)
    assert np.array_equal(got, pick_candidates(decoded, miss, distance - 5.0 * kept, 3))
    mine = window_melody_f1(sources, got)
    before = window_melody_f1(sources, model.search(mu, lengths, dataclasses.replace(job, settings=transfer_settings(
        alpha=2.0, search=plain)))[0])
    assert mine.mean() >= before.mean()
    with pytest.raises(ValueError, match="needs the source windows"):
        model.search(mu, lengths, job)
    assert SearchSpace.from_json(weighted.to_json()) == weighted
    for bad in (-1.0, 101.0):  # a hand-edited settings file: the weight keeps its bounds
        with pytest.raises(ValueError, match="melody_weight"):
            SearchSpace.from_json({**weighted.to_json(), "melody_weight": bad})


def test_notes_held_over_a_window_start_are_tied_where_the_later_window_holds_them():
    from midistyle.roll import roll_to_notes
    from midistyle.transfer import tie_windows
    P = 4
    roll = np.zeros((8, 2, 2, P), bool)  # two windows of 4 steps, each decoded alone: every note starts in it
    roll[0:8, 0, 0, 0] = True  # pitch 0 sounds throughout, struck at both window starts
    roll[[0, 4], 0, 1, 0] = True
    roll[2:8, 1, 0, 1] = True  # left hand pitch 1 from step 2, struck again at 4
    roll[[2, 4], 1, 1, 1] = True
    roll[4:6, 0, 0, 2] = True  # pitch 2 starts at the window start: nothing sounded before
    roll[4, 0, 1, 2] = True
    holds = np.zeros((2, 2, P), bool)
    holds[1, 0, [0, 2]] = True  # the second window holds pitches 0 and 2 of the right hand, not the left hand's 1
    tied = tie_windows(roll.copy(), [0, 4], holds)
    assert sorted(roll_to_notes(tied)) == [(0, 0, 0, 8), (0, 2, 4, 6), (1, 1, 2, 4), (1, 1, 4, 8)]
    assert len(roll_to_notes(roll)) == 5  # untied: pitch 0 struck again at step 4
    assert np.array_equal(tie_windows(roll.copy(), [0, 4], np.zeros_like(holds)), roll)  # nothing held
    assert np.array_equal(tie_windows(roll.copy(), [0], holds[:1]), roll)  # the piece's first step is no boundary
    from midistyle.transfer import stitch_tied
    parts = [(0, 4, roll[:4]), (4, 4, roll[4:])]
    assert np.array_equal(stitch_tied(parts, holds, 10, P)[:8], tied) and not stitch_tied(parts, holds, 10, P)[8:].any()
    assert stitch_tied([], [], 6, P).shape == (6, 2, 2, P) and not stitch_tied([], [], 6, P).any()


def test_transferred_pieces_tie_notes_over_window_starts_as_the_decoder_holds_them(model, project):
    piece = read_piece(project.raw / "calm" / "piece0.mid", model.spec)
    windows = audible_windows(piece, model.spec)
    assert len(windows) > 1
    job = Job(RECONSTRUCTION, model.style_index("calm"), model.style_index("calm"), transfer_settings(alpha=0.0))
    roll = model.transfer_piece(piece, [job])[0]
    rolls, holds = model.decode_windows(model.encode(windows), [model.threshold])
    boundary = 0
    for w, hold in zip(windows[1:], holds[1:]):
        s = w.start
        both = roll[s, :, 0] & roll[s - 1, :, 0]
        boundary += int(both.sum())
        assert np.array_equal(roll[s, :, 1] & both, both & ~hold)  # struck again exactly where not held
    assert boundary > 0


def test_windows_no_path_settles_take_the_neighbour_moves_towards_real_target_windows(model, project):
    piece = read_piece(project.raw / "calm" / "piece0.mid", model.spec)
    windows = [w for w in piece_windows(piece, model.spec) if w.notes]
    mu, lengths = model.encode(windows), np.array([w.length for w in windows])
    s, t = model.style_index("calm"), model.style_index("busy")
    bank = model.regions.samples[t]  # the checkpoint's sample of the target's training latents
    assert 0 < len(bank) <= tiny_params().classifier.region_samples
    landing = mu + model.path_vectors(mu, s, t, ("transport",))[0]
    order = torch.cdist(landing, bank).argsort(dim=1)
    for i, d in enumerate(model.neighbour_vectors(mu, s, t, 2)):  # step 1: the i-th nearest real target window
        torch.testing.assert_close(mu + d, bank[order[:, i]])
    plain = _space(model, min_probability=0.99)  # few windows settle: the tiny classifier is rarely this sure
    space = dataclasses.replace(plain, neighbour_steps=(0.5, 1.0), neighbours=2)
    assert SearchSpace.from_json(space.to_json()) == space

    def searched(sp, reach=1.0):
        return list(model.search_steps(mu, lengths, s, t, sp.alphas(2.0), sp, reach))[-1].windows

    _, miss, _, _ = model.search_candidates(mu, lengths, s, t, plain.alphas(2.0), plain)
    settled = (miss == 0).any(axis=0)
    assert (~settled).any()
    before, after = searched(plain), searched(space)
    assert np.array_equal(after[settled], before[settled])  # a path's choice stays where one passes
    moved, _, moved_miss = model.neighbour_choice(mu[~settled], lengths[~settled], s, t, space, 1.0)
    # elsewhere the neighbour moves' choice where it passes or misses no more than every path move, else the paths'
    took = moved_miss <= miss.min(axis=0)[~settled]
    assert took.any()
    assert np.array_equal(after[~settled][took], moved[took])
    assert np.array_equal(after[~settled][~took], before[~settled][~took])
    assert np.array_equal(searched(space, reach=0.0), before)  # --strength 0: no neighbour move
    job = Job("attribute_search", s, t, transfer_settings(alpha=2.0, search=space))
    assert job.settings.with_strength(0.5).reach == 0.5 and job.settings.with_strength(3).reach == 1.0
    assert np.array_equal(model.search(mu, lengths, job)[0], after)
    from types import SimpleNamespace
    from midistyle.tuning import search_sweep  # tune_transfer chooses the cap on the path moves alone
    swept, _, paths_only = search_sweep(model, SimpleNamespace(length=lengths, rolls=None), mu, s, t, [2.0], space)
    assert np.array_equal(swept[0], after) and np.array_equal(paths_only[0], before)
