"""Key changes of windows: the one transposition every trainer uses.

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
