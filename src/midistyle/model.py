"""The GRU variational autoencoder of two-hand piano-roll windows.

Shapes (B batch, W steps, P pitches, S steps per bar, N = W // S bars; see
midistyle.roll for the axes)::

    x          (B, W, 2, 2, P)   hand x {sounding, onset} x pitch, 0/1 floats
    mu, logvar (B, Z)
    logits     (B, W, 2, K, P)   K = 2 (output "independent") or 3 (output "note_state")

Encoder: a bidirectional GRU per hand (or one over both hands) reads the window;
the last hidden states (both directions, both hands) are concatenated, passed
through a dense ReLU layer and projected to mu and log sigma^2.

Decoder (it never sees the encoder's outputs: everything it knows about the
window comes through z):

* ``flat``: z -> linear + ReLU initialises one GRU over the W steps; z is also
  fed at every step.
* ``hierarchical`` (MusicVAE's conductor): a conductor GRU turns z into one
  embedding per bar, c (B, N, Hc); each bar is decoded by a bottom GRU whose
  state starts from c_b and which reads c_b at every step. Bars are decoded
  independently given their embeddings, so errors cannot run on past a bar
  line, and all bars of a batch decode in parallel (S sequential steps
  instead of W).

When ``autoregressive`` the step input also holds the *previous frame* (the
target shifted right by one step inside its bar - or inside the window for
``flat`` - in training; the decoder's own decoded frame when generating).

Output (``output``):

* ``independent``: two Bernoulli logits per cell, sounding and onset;
* ``note_state``: one categorical per cell over {off, onset, hold}, so an onset
  is always a sounding cell and the loss is a calibrated cross-entropy.

Free decoding (:meth:`StyleVAE.generate`) makes every frame *consistent*: a
cell sounds when its sounding probability passes the threshold, and a sounding
cell with no sounding predecessor is an onset (a held note cannot start from
silence); otherwise it is an onset when the model prefers onset over hold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from midistyle.errors import UserError
from midistyle.roll import RollSpec

OFF, ONSET_STATE, HOLD = 0, 1, 2  # the note_state classes
# log sigma^2 starts here (sigma ~ 0.05), not at 0 (sigma = 1): at the start the noise would drown mu and the
# decoder would learn to ignore z before the encoder has learnt anything; the KL term raises sigma later.
LOGVAR_INIT = -6.0


@dataclass(frozen=True)
class VAEConfig:
    """Everything needed to rebuild the model (stored in the checkpoint); built from params.model."""

    n_pitches: int
    window_steps: int
    steps_per_bar: int
    latent_size: int
    encoder: str  # per_hand | joint
    encoder_hidden: int
    dense_size: int
    decoder: str  # flat | hierarchical
    conductor_hidden: int
    decoder_hidden: int
    frames_per_step: int  # frames each GRU step reads (encoder) and writes (decoder)
    autoregressive: bool
    output: str  # independent | note_state
    dropout: float

    @property
    def frame_size(self) -> int:  # 2 hands x 2 channels x P pitches
        return 4 * self.n_pitches

    @property
    def states(self) -> int:  # output classes per cell and hand
        return 3 if self.output == "note_state" else 2

    @property
    def bars(self) -> int:
        return self.window_steps // self.steps_per_bar

    @classmethod
    def from_params(cls, model_params, spec: RollSpec) -> "VAEConfig":
        """params.model and the windows' RollSpec (pitch rows, window and bar length in steps)."""
        n_pitches, window_steps, steps_per_bar = spec.n_pitches, spec.window_steps, spec.bar_steps
        if window_steps % steps_per_bar:
            raise UserError(f"window of {window_steps} steps is not a whole number of {steps_per_bar}-step bars")
        if steps_per_bar % model_params.frames_per_step:
            raise UserError(f"params.yaml: model.frames_per_step: {model_params.frames_per_step} does not divide "
                            f"a bar of {steps_per_bar} steps")
        fields = [f for f in cls.__dataclass_fields__ if f not in ("n_pitches", "window_steps", "steps_per_bar")]
        return cls(n_pitches=n_pitches, window_steps=window_steps, steps_per_bar=steps_per_bar,
                   **{f: getattr(model_params, f) for f in fields})


def note_states(x: torch.Tensor) -> torch.Tensor:
    """Roll (B, W, 2, 2, P) -> class per cell (B, W, 2, P): 0 off, 1 onset, 2 held from the previous step."""
    sounding, onset = x[:, :, :, 0] > 0.5, x[:, :, :, 1] > 0.5
    return torch.where(onset, ONSET_STATE, torch.where(sounding, HOLD, OFF))


def shift_right(frames: torch.Tensor, block: int) -> torch.Tensor:
    """frames (B, W, F) -> the previous frame of every step, zeros at the start of each ``block`` steps."""
    B, W, Fs = frames.shape
    blocks = frames.reshape(B, W // block, block, Fs)
    prev = torch.cat([torch.zeros_like(blocks[:, :, :1]), blocks[:, :, :-1]], dim=2)
    return prev.reshape(B, W, Fs)


class StyleVAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        if cfg.decoder not in ("flat", "hierarchical") or cfg.output not in ("independent", "note_state"):
            raise ValueError(f"unknown decoder {cfg.decoder!r} or output {cfg.output!r}")
        self.cfg = cfg
        P, H, Z, k = cfg.n_pitches, cfg.encoder_hidden, cfg.latent_size, cfg.frames_per_step
        if cfg.encoder == "per_hand":
            self.encoders = nn.ModuleList([nn.GRU(k * 2 * P, H, batch_first=True, bidirectional=True) for _ in range(2)])
            enc_out = 2 * 2 * H  # 2 hands x 2 directions
        else:
            self.encoders = nn.ModuleList([nn.GRU(k * 4 * P, H, batch_first=True, bidirectional=True)])
            enc_out = 2 * H
        self.dense = nn.Sequential(nn.Linear(enc_out, cfg.dense_size), nn.ReLU(), nn.Dropout(cfg.dropout))
        self.to_mu = nn.Linear(cfg.dense_size, Z)
        self.to_logvar = nn.Linear(cfg.dense_size, Z)
        nn.init.constant_(self.to_logvar.bias, LOGVAR_INIT)

        frame_in = k * cfg.frame_size if cfg.autoregressive else 0
        clock = cfg.steps_per_bar // k  # one-hot position of the GRU step in its bar: the same for every window
        if cfg.decoder == "hierarchical":
            self.conductor_init = nn.Sequential(nn.Linear(Z, cfg.conductor_hidden), nn.Tanh())
            self.conductor = nn.GRU(Z, cfg.conductor_hidden, batch_first=True)
            self.bar_init = nn.Sequential(nn.Linear(cfg.conductor_hidden, cfg.decoder_hidden), nn.Tanh())
            self.decoder = nn.GRU(cfg.conductor_hidden + clock + frame_in, cfg.decoder_hidden, batch_first=True)
        else:
            self.z_to_state = nn.Sequential(nn.Linear(Z, cfg.decoder_hidden), nn.ReLU())
            self.decoder = nn.GRU(Z + clock + frame_in, cfg.decoder_hidden, batch_first=True)
        self.heads = nn.ModuleList([nn.Linear(cfg.decoder_hidden, k * cfg.states * P) for _ in range(2)])  # per hand
        # A sounding cell that continues a sounding one is a new note when P(onset | sounding) passes this; tuned on
        # val for onset F1 after training (train_vae) and saved with the weights.
        self.register_buffer("onset_threshold", torch.tensor(0.5))

    # ------------------------------------------------------------ encoder
    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, W, 2, 2, P) -> mu, logvar (B, Z). ``lengths`` (B,) ignores the padding.

        Each GRU step reads ``frames_per_step`` consecutive frames (B, W/k, k * 2P per hand).
        """
        B, W = x.shape[:2]
        k = self.cfg.frames_per_step
        if self.cfg.encoder == "per_hand":
            streams = [x[:, :, hand].reshape(B, W // k, -1) for hand in range(2)]  # (B, W/k, k * 2P) each
        else:
            streams = [x.reshape(B, W // k, -1)]  # (B, W/k, k * 4P)
        finals = []
        for gru, seq in zip(self.encoders, streams):
            if lengths is not None:
                steps = ((lengths + k - 1) // k).clamp(min=1).cpu()
                seq = pack_padded_sequence(seq, steps, batch_first=True, enforce_sorted=False)
            _, h = gru(seq)  # h (2 directions, B, H)
            finals.append(h.transpose(0, 1).reshape(B, -1))
        hidden = self.dense(torch.cat(finals, dim=-1))
        return self.to_mu(hidden), self.to_logvar(hidden)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    # ------------------------------------------------------------ decoder
    # In GRU steps: T = W / k steps of k frames; a block (a bar, or the whole window when flat) has b steps.
    def block(self, T: int) -> int:
        """GRU steps the decoder runs without a restart: one bar (hierarchical) or the whole window (flat)."""
        return self.cfg.steps_per_bar // self.cfg.frames_per_step if self.cfg.decoder == "hierarchical" else T

    def _contexts(self, z: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, Z) -> per-step context (B * T/b, b, C + c) and initial states (1, B * T/b, Hd).

        The context is the bar's embedding (hierarchical) or z (flat), beside a
        one-hot clock of the step's position in its bar (c = steps_per_bar / k).
        """
        B, blk = z.shape[0], self.block(T)
        per_bar = self.cfg.steps_per_bar // self.cfg.frames_per_step
        clock = torch.eye(per_bar, device=z.device, dtype=z.dtype)[torch.arange(blk) % per_bar]  # (b, c)
        if self.cfg.decoder == "hierarchical":
            n = T // blk
            c, _ = self.conductor(z.unsqueeze(1).expand(-1, n, -1).contiguous(), self.conductor_init(z).unsqueeze(0))
            c = c.reshape(B * n, -1)  # (B*N, Hc): one embedding per bar
            ctx = torch.cat([c.unsqueeze(1).expand(-1, blk, -1), clock.expand(B * n, -1, -1)], dim=-1)
            return ctx, self.bar_init(c).unsqueeze(0)
        ctx = torch.cat([z.unsqueeze(1).expand(-1, T, -1), clock.expand(B, -1, -1)], dim=-1)
        return ctx, self.z_to_state(z).unsqueeze(0)

    def _heads(self, out: torch.Tensor, B: int) -> torch.Tensor:
        """GRU outputs (B * T/b, b, Hd) -> logits (B, T * k, 2, K, P)."""
        out = out.reshape(B, -1, out.shape[-1])  # (B, T, Hd)
        T, k, K, P = out.shape[1], self.cfg.frames_per_step, self.cfg.states, self.cfg.n_pitches
        return torch.stack([head(out).view(B, T * k, K, P) for head in self.heads], dim=2)

    def decode(self, z: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced decoding: z (B, Z), target (B, W, 2, 2, P) -> logits (B, W, 2, K, P).

        The frame input of GRU step t is the target's frames of step t-1 (zeros
        at the first step of each block), so the output at step t depends on z
        and on earlier frames only.
        """
        k = self.cfg.frames_per_step
        B, W = z.shape[0], (self.cfg.window_steps if target is None else target.shape[1])
        T = W // k
        ctx, h0 = self._contexts(z, T)
        inputs = ctx
        if self.cfg.autoregressive:
            if target is None:
                raise ValueError("an autoregressive decoder needs the target for teacher forcing; use generate()")
            blk = self.block(T)
            prev = shift_right(target.reshape(B, T, -1), blk).reshape(B * T // blk, blk, -1)  # (B*T/b, b, k*4P)
            inputs = torch.cat([ctx, prev], dim=-1)
        out, _ = self.decoder(inputs, h0)
        return self._heads(out, B)

    def cell_probs(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """logits (..., 2, K, P) -> P(sounding), P(onset rather than hold | sounding), each (..., 2, P)."""
        if self.cfg.output == "note_state":
            p = torch.softmax(logits, dim=-2)
            sounding = p[..., ONSET_STATE, :] + p[..., HOLD, :]
            return sounding, p[..., ONSET_STATE, :] / sounding.clamp(min=1e-12)
        return torch.sigmoid(logits[..., 0, :]), torch.sigmoid(logits[..., 1, :])

    def decide(self, sounding: torch.Tensor, onset: torch.Tensor, prev_sounding: torch.Tensor,
               threshold: float) -> torch.Tensor:
        """Consistent frames: sounding, onset (B, F, 2, P) and the sounding frame before them (B, 2, P) ->
        (B, F, 2, 2, P) in {0, 1}. A cell sounds above the threshold; it is an onset where nothing sounded
        the frame before, or where P(onset | sounding) passes ``onset_threshold``."""
        on = sounding > threshold
        before = torch.cat([prev_sounding.unsqueeze(1) > 0.5, on[:, :-1]], dim=1)
        starts = on & (~before | (onset > self.onset_threshold))
        return torch.stack([on, starts], dim=-2).float()

    def _frames(self, steps: int | None) -> tuple[int, int, int]:
        """(W, blk, T) of free decoding: W frames asked for, GRU steps per block, and whole blocks of GRU steps
        (T, cut back to W frames at the end)."""
        k = self.cfg.frames_per_step
        W = steps or self.cfg.window_steps
        blk = self.block(-(-W // k))
        return W, blk, -(-W // (k * blk)) * blk

    @torch.no_grad()
    def probabilities(self, z: torch.Tensor, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A decoder that does not read its own output: the sounding and onset probabilities (B, T*k, 2, P) of
        every frame, from z alone. They are the same at every threshold, so a caller deciding at several
        thresholds (:meth:`decide`) runs the decoder once; frames past ``steps`` are cut by the caller."""
        if self.cfg.autoregressive:
            raise ValueError("an autoregressive decoder's probabilities depend on its decided frames")
        _, _, T = self._frames(steps)
        ctx, h = self._contexts(z, T)
        out, _ = self.decoder(ctx, h)
        return self.cell_probs(self._heads(out, z.shape[0]))

    @torch.no_grad()
    def generate(self, z: torch.Tensor, steps: int | None = None, threshold: float = 0.5) -> torch.Tensor:
        """Free decoding from z alone: z (B, Z) -> (B, W, 2, 2, P).

        Channel 0 holds the sounding probability of every cell, channel 1 the
        decided onsets (0/1), so ``out > threshold`` is the decoded, consistent
        roll. Autoregressive decoders feed back their own decoded frames.
        """
        k, P = self.cfg.frames_per_step, self.cfg.n_pitches
        W, blk, T = self._frames(steps)
        if not self.cfg.autoregressive:
            sounding, onset = self.probabilities(z, steps)  # (B, T*k, 2, P) each
            decided = self.decide(sounding, onset, torch.zeros_like(sounding[:, 0]), threshold)
            return torch.stack([sounding, decided[:, :, :, 1]], dim=3)[:, :W]
        ctx, h = self._contexts(z, T)
        n = ctx.shape[0]  # B * blocks
        frames = torch.zeros(n, 1, k * self.cfg.frame_size, device=z.device)  # the previous GRU step's frames
        outs = []
        for t in range(blk):
            out, h = self.decoder(torch.cat([ctx[:, t : t + 1], frames], dim=-1), h)
            sounding, onset = self.cell_probs(self._heads(out, n))  # (n, k, 2, P)
            last = frames.view(n, k, 2, 2, P)[:, -1, :, 0]  # (n, 2, P): sounding in the frame before
            decided = self.decide(sounding, onset, last, threshold)  # (n, k, 2, 2, P)
            outs.append(torch.stack([sounding, decided[:, :, :, 1]], dim=3))
            frames = decided.reshape(n, 1, -1)
        return torch.cat(outs, dim=1).reshape(z.shape[0], T * k, 2, 2, P)[:, :W]

    def reconstruction_nll(self, logits: torch.Tensor, x: torch.Tensor, pos_weight: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per step: logits (B, W, 2, K, P), x (B, W, 2, 2, P) -> (B, W) nats.

        ``pos_weight`` (2,) up-weights the rare positives: (sounding, onset) cells
        for ``independent``; (onset, hold) cells for ``note_state``.
        """
        if self.cfg.output == "note_state":
            target = note_states(x)  # (B, W, 2, P)
            weight = torch.cat([torch.ones(1, device=x.device, dtype=pos_weight.dtype), pos_weight[[1, 0]]])
            nll = F.cross_entropy(logits.movedim(3, 1), target, weight=weight.to(logits.dtype), reduction="none")
            return nll.sum(dim=(2, 3))
        bce = F.binary_cross_entropy_with_logits(logits, x, pos_weight=pos_weight.view(2, 1), reduction="none")
        return bce.sum(dim=(2, 3, 4))

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


VAE_CHECKPOINT_KEYS = ("model_config", "model_state", "spec", "styles", "threshold")  # what the readers need


def load_vae(path, map_location: str | torch.device = "cpu") -> tuple[StyleVAE, dict]:
    """Rebuild the VAE from a checkpoint written by the train_vae stage; its grid is :func:`vae_spec`.

    A checkpoint without one of :data:`VAE_CHECKPOINT_KEYS` (an older format) is
    a one-line error naming the file and the key: nothing is filled in.
    """
    ckpt = read_checkpoint(path, CHECKPOINT_KIND, "train_vae", map_location)
    again = "run `dvc repro train_vae` again"
    missing = [k for k in VAE_CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"{path}: a VAE checkpoint of an older format, without {missing[0]!r} ({again})")
    try:
        cfg = VAEConfig(**ckpt["model_config"])
        vae_spec(ckpt)
    except TypeError:
        raise UserError(f"{path}: a VAE checkpoint of an older format ({again})") from None
    model = StyleVAE(cfg)
    model.load_state_dict(ckpt["model_state"])
    model.eval()
    return model, ckpt


def vae_spec(ckpt: dict) -> RollSpec:
    """The piano-roll grid a VAE checkpoint (from :func:`load_vae`) was trained on."""
    return RollSpec(**ckpt["spec"])
