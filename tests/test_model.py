"""The GRU-VAE: a causal decoder that knows the window only through z, and checkpoints that load back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from midistyle.model import StyleVAE, VAEConfig, load_vae, shift_right
from midistyle.recon import count_cells, reconstruct, reconstruction_scores, scores, tune_threshold
from midistyle.shards import ShardIndex
from midistyle.train import Paths, model_loss, to_tensors, train
from tests.helpers_train import make_shards, tiny_params, tiny_vae_config

MODEL = {"latent_size": 16, "encoder_hidden": 32, "dense_size": 32, "conductor_hidden": 32, "decoder_hidden": 128,
         "frames_per_step": 2, "autoregressive": True}


def config(**overrides) -> VAEConfig:
    """params.yaml's model, resized, on the tiny shards' windows: 16 steps of 25 pitches, 2 bars of 8 steps."""
    return tiny_vae_config(MODEL, **overrides)


CFG = config()
DESIGNS = [dict(decoder=d, autoregressive=a, output=o) for d in ("flat", "hierarchical") for a in (True, False)
           for o in ("independent", "note_state")]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return ShardIndex.open(make_shards(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def overfit(shards):
    """A VAE trained to reproduce 8 windows (400 Adam steps, a few seconds): (model, batch, threshold)."""
    batch = shards.load_split("train").take(slice(0, 8))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is as fast, and robust to a busy machine
    try:
        return _overfit(batch)
    finally:
        torch.set_num_threads(threads)


def _overfit(batch):
    torch.manual_seed(0)
    vae = StyleVAE(CFG)
    opt = torch.optim.Adam(vae.parameters(), lr=5e-3)
    x, lengths = to_tensors(batch, torch.device("cpu"))
    pos_weight = torch.tensor([1.0, 1.0])
    for _ in range(400):
        loss = model_loss(vae, x, lengths, pos_weight, kl_weight=0.01, free_bits=0.0)["total"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
    vae.eval()
    threshold, _, _ = tune_threshold(vae, batch)
    return vae, batch, threshold


@pytest.mark.parametrize("encoder", ["per_hand", "joint"])
@pytest.mark.parametrize("design", DESIGNS)
def test_shapes(encoder, design):
    cfg = config(n_pitches=7, window_steps=12, steps_per_bar=4, latent_size=3, encoder=encoder, encoder_hidden=5,
                 dense_size=4, conductor_hidden=5, decoder_hidden=6, **design)
    vae = StyleVAE(cfg)
    x = (torch.rand(2, 12, 2, 2, 7) < 0.3).float()
    logits, mu, logvar, z = vae(x, torch.tensor([12, 5]))
    assert logits.shape == (2, 12, 2, cfg.states, 7) and mu.shape == logvar.shape == z.shape == (2, 3)
    assert vae.reconstruction_nll(logits, x, torch.ones(2)).shape == (2, 12)
    assert vae.generate(mu).shape == x.shape


def test_shift_right_restarts_every_block():
    frames = torch.arange(1, 7, dtype=torch.float32).view(1, 6, 1)
    assert shift_right(frames, 3).flatten().tolist() == [0, 1, 2, 0, 4, 5]
    assert shift_right(frames, 6).flatten().tolist() == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("decoder", ["flat", "hierarchical"])
def test_decoder_is_causal_and_reads_only_z_and_the_shifted_target(decoder):
    torch.manual_seed(0)
    vae = StyleVAE(config(decoder=decoder)).eval()
    z = torch.randn(3, CFG.latent_size)
    target = (torch.rand(3, 16, 2, 2, 25) < 0.2).float()
    later = target.clone()
    later[:, 11:] = 1.0 - later[:, 11:]  # change every frame from step 11 on
    a, b = vae.decode(z, target), vae.decode(z, later)
    # step t reads target[t - 1]: steps 0..11 cannot see a change at step >= 11
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.equal(a[:, 12:], b[:, 12:])
    if decoder == "hierarchical":  # a bar restarts from its conductor embedding: bar 2 ignores bar 1's frames
        early = target.clone()
        early[:, :8] = 1.0 - early[:, :8]
        assert torch.equal(vae.decode(z, early)[:, 8:], a[:, 8:])


@pytest.mark.parametrize("design", DESIGNS)
def test_generate_feeds_back_its_own_consistent_frames(design):
    """Free decoding == teacher forcing on the decoder's own decoded output, and that output is consistent."""
    torch.manual_seed(1)
    vae = StyleVAE(config(**design)).eval()
    z = torch.randn(4, CFG.latent_size)
    out = vae.generate(z, threshold=0.3)
    roll = (out > 0.3).float()
    sounding, onset = roll[:, :, :, 0], roll[:, :, :, 1]
    assert sounding.sum() > 0 and torch.all(onset <= sounding)  # an onset always sounds
    before = torch.cat([torch.zeros_like(sounding[:, :1]), sounding[:, :-1]], dim=1)
    assert torch.all(onset[(sounding == 1) & (before == 0)] == 1)  # no note is held from silence
    with torch.no_grad():
        forced, _ = vae.cell_probs(vae.decode(z, roll) if design["autoregressive"] else vae.decode(z))
    torch.testing.assert_close(forced, out[:, :, :, 0], rtol=1e-4, atol=1e-5)


def test_overfitting_a_handful_of_windows_reconstructs_them_by_free_decoding(overfit):
    vae, batch, threshold = overfit
    s = reconstruction_scores(vae, batch, threshold)
    assert s["f1"] > 0.95, s
    assert s["onset_f1"] > 0.9, s


def test_the_reconstruction_depends_on_z(overfit):
    """Decoding every window from another window's z is much worse: the decoder uses the latent code."""
    vae, batch, threshold = overfit
    x, lengths = to_tensors(batch, torch.device("cpu"))
    with torch.no_grad():
        mu, _ = vae.encode(x, lengths)
        shuffled = vae.generate(mu.roll(1, dims=0), steps=x.shape[1], threshold=threshold).numpy()
    own = reconstruction_scores(vae, batch, threshold)["f1"]
    other = scores(count_cells(shuffled > threshold, batch.rolls, batch.lengths))["f1"]
    assert other < own - 0.3, (own, other)


def test_reconstruction_ignores_padding(overfit):
    vae, batch, threshold = overfit
    short = batch.take(slice(0, 2))
    short.lengths = np.array([5, 16], np.int32)
    probs = reconstruct(vae, short.rolls, short.lengths, threshold)
    assert not probs[0, 5:].any()
    pred = probs > threshold
    pred[0, 5:] = True  # "notes" in the padding are not counted
    assert count_cells(pred, short.rolls, short.lengths) == count_cells(probs > threshold, short.rolls, short.lengths)


def test_checkpoint_round_trip_through_load_vae(shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_params(train={"epochs": 1})
    train(params, Paths(shards=shards.root), progress=False)
    vae, ckpt = load_vae("models/vae.pt")  # weights_only=True inside
    assert not vae.training
    assert ckpt["epoch"] == 1 and ckpt["styles"] == ["legato", "staccato"]
    assert ckpt["shards_hash"] == shards.content_hash() and ckpt["spec"] == shards.spec.to_dict()
    assert 0 < ckpt["threshold"] < 1 and set(ckpt["pos_weight"]) == {"sounding", "onset"}
    assert ckpt["params"]["train"]["epochs"] == 1 and len(ckpt["history"]) == 1
    assert "optimizer_state" in ckpt and "git_rev" not in ckpt and set(ckpt["params"]) == {"seed", "model", "train"}
    fresh = StyleVAE(VAEConfig(**ckpt["model_config"]))
    fresh.load_state_dict(ckpt["model_state"])
    fresh.eval()
    x = torch.from_numpy(shards.load_split("val").rolls[:4]).float()
    with torch.no_grad():
        torch.testing.assert_close(vae.encode(x)[0], fresh.encode(x)[0], rtol=0, atol=0)


def test_texture_ratios_and_other_z_f1_on_hand_made_rolls():
    true = np.zeros((1, 4, 2, 2, 3), bool)
    true[0, 0:2, 0, :, 0] = [[True, True], [True, False]]  # one note held for 2 steps: sounding (0, 1), onset (0)
    pred = true.copy()
    pred[0, 2:4, 0, :, 1] = [[True, True], [True, True]]  # plus two struck notes on another pitch
    s = scores(count_cells(pred, true, np.array([4]), other=np.zeros_like(true)))
    assert s["f1"] == pytest.approx(2 / 3) and s["other_f1"] == 0.0
    assert s["density_ratio"] == 3.0  # 3 onsets for 1
    assert s["polyphony_ratio"] == 1.0  # one note at a time in both
    same = scores(count_cells(true, true, np.array([4]), other=true))
    assert same["density_ratio"] == same["polyphony_ratio"] == same["other_f1"] == 1.0
