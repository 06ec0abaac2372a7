"""The judge's cut windows (augment.cut): lengths in whole beats within bounds, nothing left past them."""

import torch

from midistyle.augment import MIN_CUT_BEATS, cut


def windows(lengths: list[int], W: int = 32, P: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor(lengths)
    x = (torch.arange(W)[None, :] < lens[:, None]).float()[:, :, None, None, None].expand(-1, W, 2, 2, P).clone()
    return x, lens


def test_cut_windows_keep_whole_beats_between_two_and_their_length():
    x, lens = windows([32] * 200 + [24] * 100 + [8] * 50 + [6] * 50)
    out, new = cut(x, lens, 0.5, 4, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and new.shape == lens.shape
    assert (new <= lens).all() and ((new == lens) | ((new % 4 == 0) & (new >= MIN_CUT_BEATS * 4))).all()
    # about half of the windows longer than two beats are cut (a few draw their own length); shorter ones keep theirs
    assert 0.3 < (new[:300] < lens[:300]).float().mean() < 0.55
    assert (new[300:] == lens[300:]).all()
    steps = torch.arange(32)[None, :]
    assert not out[(steps >= new[:, None])].any()  # nothing past the new length...
    assert out[(steps < new[:, None])].all()  # ...and everything before it kept


def test_cut_share_zero_returns_the_inputs_and_draws_nothing():
    x, lens = windows([32, 16])
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    out, new = cut(x, lens, 0.0, 4, g)
    assert out is x and new is lens and torch.equal(g.get_state(), state)


def test_cut_is_seeded():
    x, lens = windows([32] * 64)
    a = cut(x, lens, 0.5, 4, torch.Generator().manual_seed(7))[1]
    b = cut(x, lens, 0.5, 4, torch.Generator().manual_seed(7))[1]
    assert torch.equal(a, b)
