"""The GRU variational autoencoder of two-hand piano-roll windows.

Shapes (B batch, W steps, P pitches; see midistyle.roll for the axes)::

    x       (B, W, 2, 2, P)  hand x {sounding, onset} x pitch, 0/1 floats
    mu, logvar (B, Z)
    logits  (B, W, 2, 2, P)

Encoder: a bidirectional GRU per hand (or one over both hands) reads the window;
the last hidden states (both directions, both hands) are concatenated, passed
through a dense ReLU layer and projected to mu and log sigma^2.

Decoder: z -> linear + ReLU initialises the GRU state, and z is also fed at
every step. When ``autoregressive`` the step input also holds the *previous
target frame* (the target shifted right by one step: teacher forcing in
training, the decoder's own thresholded or sampled output when generating).
The decoder never sees the encoder's outputs: everything it knows about the
window comes through z.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from midistyle.errors import UserError


@dataclass(frozen=True)
class VAEConfig:
    n_pitches: int = 51
    window_steps: int = 64
    latent_size: int = 64
    encoder: str = "per_hand"  # per_hand | joint
    encoder_hidden: int = 256
    dense_size: int = 256
    decoder_hidden: int = 512
    autoregressive: bool = True
    dropout: float = 0.0

    @property
    def frame_size(self) -> int:  # 2 hands x 2 channels x P pitches
        return 4 * self.n_pitches

    @classmethod
    def from_params(cls, model_params, n_pitches: int, window_steps: int) -> "VAEConfig":
        fields = ("latent_size", "encoder", "encoder_hidden", "dense_size", "decoder_hidden", "autoregressive", "dropout")
        return cls(n_pitches=n_pitches, window_steps=window_steps, **{f: getattr(model_params, f) for f in fields})


class StyleVAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.cfg = cfg
        P, H = cfg.n_pitches, cfg.encoder_hidden
        if cfg.encoder == "per_hand":
            self.encoders = nn.ModuleList([nn.GRU(2 * P, H, batch_first=True, bidirectional=True) for _ in range(2)])
            enc_out = 2 * 2 * H  # 2 hands x 2 directions
        else:
            self.encoders = nn.ModuleList([nn.GRU(4 * P, H, batch_first=True, bidirectional=True)])
            enc_out = 2 * H
        self.dense = nn.Sequential(nn.Linear(enc_out, cfg.dense_size), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.to_mu = nn.Linear(cfg.dense_size, cfg.latent_size)
        self.to_logvar = nn.Linear(cfg.dense_size, cfg.latent_size)

        self.z_to_state = nn.Sequential(nn.Linear(cfg.latent_size, cfg.decoder_hidden), nn.ReLU())
        dec_in = cfg.latent_size + (cfg.frame_size if cfg.autoregressive else 0)
        self.decoder = nn.GRU(dec_in, cfg.decoder_hidden, batch_first=True)
        self.heads = nn.ModuleList([nn.Linear(cfg.decoder_hidden, 2 * P) for _ in range(2)])  # one per hand

    # ------------------------------------------------------------ encoder
    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, W, 2, 2, P) -> mu, logvar (B, Z). ``lengths`` (B,) ignores the padding."""
        B, W = x.shape[:2]
        if self.cfg.encoder == "per_hand":
            streams = [x[:, :, hand].reshape(B, W, -1) for hand in range(2)]  # (B, W, 2P) each
        else:
            streams = [x.reshape(B, W, -1)]  # (B, W, 4P)
        finals = []
        for gru, seq in zip(self.encoders, streams):
            if lengths is not None:
                seq = pack_padded_sequence(seq, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
            _, h = gru(seq)  # h (2 directions, B, H)
            finals.append(h.transpose(0, 1).reshape(B, -1))
        hidden = self.dense(torch.cat(finals, dim=-1))
        return self.to_mu(hidden), self.to_logvar(hidden)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    # ------------------------------------------------------------ decoder
    def _step_inputs(self, z: torch.Tensor, prev: torch.Tensor | None, W: int) -> torch.Tensor:
        """z (B, Z) and previous frames (B, W, 4P) -> decoder inputs (B, W, Z [+ 4P])."""
        zs = z.unsqueeze(1).expand(-1, W, -1)
        return torch.cat([zs, prev], dim=-1) if prev is not None else zs

    def _heads(self, out: torch.Tensor) -> torch.Tensor:
        """GRU outputs (B, W, Hd) -> logits (B, W, 2, 2, P)."""
        B, W = out.shape[:2]
        return torch.stack([head(out).view(B, W, 2, self.cfg.n_pitches) for head in self.heads], dim=2)

    def decode(self, z: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced decoding: z (B, Z), target (B, W, 2, 2, P) -> logits (B, W, 2, 2, P).

        The decoder's frame input at step t is ``target[t-1]`` (zeros at t=0), so
        the output at step t depends on z and on frames before t only.
        """
        W = self.cfg.window_steps if target is None else target.shape[1]
        prev = None
        if self.cfg.autoregressive:
            if target is None:
                raise ValueError("an autoregressive decoder needs the target for teacher forcing; use generate()")
            flat = target.reshape(target.shape[0], W, -1)
            prev = torch.cat([torch.zeros_like(flat[:, :1]), flat[:, :-1]], dim=1)  # shift right
        h0 = self.z_to_state(z).unsqueeze(0)  # (1, B, Hd)
        out, _ = self.decoder(self._step_inputs(z, prev, W), h0)
        return self._heads(out)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, steps: int | None = None, threshold: float = 0.5, sample: bool = False,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Free decoding from z alone: z (B, Z) -> probabilities (B, W, 2, 2, P).

        Autoregressive decoders feed back their own thresholded (or sampled)
        frame; the returned tensor holds the probabilities of every step.
        """
        W = steps or self.cfg.window_steps
        if not self.cfg.autoregressive:
            h0 = self.z_to_state(z).unsqueeze(0)
            out, _ = self.decoder(self._step_inputs(z, None, W), h0)
            return torch.sigmoid(self._heads(out))
        B = z.shape[0]
        h = self.z_to_state(z).unsqueeze(0)
        frame = torch.zeros(B, 1, self.cfg.frame_size, device=z.device)
        probs = []
        for _ in range(W):
            out, h = self.decoder(torch.cat([z.unsqueeze(1), frame], dim=-1), h)
            p = torch.sigmoid(self._heads(out))  # (B, 1, 2, 2, P)
            probs.append(p)
            chosen = torch.bernoulli(p, generator=generator) if sample else (p > threshold).float()
            frame = chosen.reshape(B, 1, -1)
        return torch.cat(probs, dim=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """Training pass: x -> (logits, mu, logvar, z), teacher-forced."""
        mu, logvar = self.encode(x, lengths)
        z = self.reparameterize(mu, logvar) if self.training else mu
        return self.decode(z, x), mu, logvar, z


def checkpoint_config(model: StyleVAE) -> dict:
    return asdict(model.cfg)


CHECKPOINT_KIND = "vae"


def read_checkpoint(path, kind: str, stage: str, map_location: str | torch.device = "cpu") -> dict:
    """``torch.load(weights_only=True)`` of one of the pipeline's checkpoints (``kind``: vae,
    latent_classifier, judge), with a one-line error for a missing, unreadable or foreign file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no trained model (run `dvc repro {stage}` first)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many kinds (pickle, zip, runtime): all mean unreadable
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise UserError(f"{path}: not a {kind} checkpoint")
    return ckpt


def load_vae(path, map_location: str | torch.device = "cpu") -> tuple[StyleVAE, dict]:
    """Rebuild the VAE from a checkpoint written by the train_vae stage."""
    ckpt = read_checkpoint(path, CHECKPOINT_KIND, "train_vae", map_location)
    model = StyleVAE(VAEConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model, ckpt
