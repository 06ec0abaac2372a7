"""Key changes of windows: the one transposition every trainer uses; and the judge's cut windows.

The VAE (``train.transpose``), the judge (``judge.transpose``) and the latent
classifier with its style regions (``classifier.transpose``) each see their
training windows moved by a random number of semitones. For the VAE it is data
augmentation. For the judge and the latent style regions it keeps the *key*
out of what they learn as *style*. The Palestrina masses keep to the white keys
and B flat (the five black keys start 0.07 of their notes, 0.20 of the
chorales'), so a judge trained on the pieces as written called 0.73-0.79 of the
mass windows moved a semitone baroque, 0.11-0.15 renaissance
(``benchmarks/judge_keys.py``), and style means fitted on them differ by the
keys as well as the style: a transfer along them pulls a mass towards the
chorales' black keys, notes foreign to its own key.

The judge (``judge.cut_share``) also sees some of its training windows cut
short: a transfer keeps its source's window length, so a judge that learnt one
style's length judges by it (the corpus's pop windows held two beats until
short bars were grouped, and real classical windows cut to two beats were
called pop 0.81 of the time: ``benchmarks/judge_lengths.py``).
"""

from __future__ import annotations

import torch


def transpose(x: torch.Tensor, low: int, high: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Every window moved by its own random number of semitones in ``low .. high``: x (B, W, 2, 2, P) -> same
    shape, notes leaving the pitch range dropped. The shifts are drawn from ``generator`` (None: torch's global
    generator, which the VAE's training loop seeds per epoch); ``[0, 0]`` returns ``x`` and draws nothing."""
    if low == high == 0:
        return x
    P = x.shape[-1]
    shifts = torch.randint(low, high + 1, (x.shape[0],), generator=generator).to(x.device)  # (B,)
    src = torch.arange(P, device=x.device) - shifts[:, None]  # (B, P): the row each output row comes from
    valid = (src >= 0) & (src < P)
    src = src.clamp(0, P - 1)[:, None, None, None, :].expand_as(x)
    return x.gather(-1, src) * valid[:, None, None, None, :].to(x.dtype)


MIN_CUT_BEATS = 2  # a cut window keeps at least two beats: shorter ones hold too little to have a style


def cut(x: torch.Tensor, lengths: torch.Tensor, share: float, steps_per_beat: int,
        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``share`` of the windows cut short: x (B, W, 2, 2, P), lengths (B,) -> the same shapes, each chosen
    window's length drawn uniformly from the whole numbers of beats from :data:`MIN_CUT_BEATS` to its own length
    (a window shorter than that keeps its length) and the steps past it cleared. ``share`` 0 returns the inputs and
    draws nothing."""
    if share == 0:
        return x, lengths
    B, W = x.shape[:2]
    old = lengths.cpu()
    chosen = torch.rand(B, generator=generator) < share  # (B,)
    span = (old // steps_per_beat - MIN_CUT_BEATS + 1).clamp(min=1)  # (B,) lengths a window can draw
    drawn = (MIN_CUT_BEATS + (torch.rand(B, generator=generator) * span).long()) * steps_per_beat  # (B,)
    # a window of two beats or less draws two beats, so the minimum keeps its own length
    new = torch.where(chosen, torch.minimum(drawn, old), old).to(lengths.device)
    keep = torch.arange(W, device=x.device)[None, :] < new[:, None]  # (B, W)
    return x * keep[:, :, None, None, None].to(x.dtype), new
