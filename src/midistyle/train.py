"""The train_vae stage: stream the window shards, train the GRU-VAE, log to MLflow.

Loss, per window (B windows in a batch, summed over cells, averaged over B)::

    recon = sum_{t < length} sum_{hand, channel, pitch} BCEWithLogits(logits, x; pos_weight[channel])
    kl_d  = batch mean of KL(q(z_d | x) || N(0, 1))            (Z,)  nats per latent dimension
    total = recon + kl_weight(step) * sum_d max(kl_d, free_bits)

* ``pos_weight`` (sounding, onset) = (1 - d) / d for the training split's note
  density d of each channel (streamed over the shards), capped at
  ``train.max_pos_weight``; or ``train.pos_weight`` for both. Notes are rare
  (a few % of cells), so without it the decoder learns to play nothing.
* ``kl_weight`` rises linearly from 0 to ``train.kl_weight`` over
  ``train.kl_anneal_epochs`` epochs, step by step; free bits leave the first
  ``train.free_bits`` nats of every dimension unpenalised so z keeps information.
* Adam at ``train.lr``, or (``train.lr_schedule: cosine``) at its cosine decay to
  ``train.min_lr`` over the run's steps.

After every ``train.eval_every``-th epoch and the last: validation losses over the whole val split, active latent
dimensions (variance of mu over val > 0.01) and free-decoding precision/recall/F1
(midistyle.recon) on a fixed val subset of ``train.eval_windows`` windows, at
``train.threshold`` or, when null, at the threshold of a small grid that
maximises that F1 (pos_weight inflates the probabilities, so 0.5 is poor). The
checkpoint stores the chosen threshold; the other stages read it from there.

Determinism and resuming: the weights are initialised from ``train.seed`` and
every epoch re-seeds torch with ``seed * 1000 + epoch`` and reads the shards in
the order of ``(seed, epoch)``, with deterministic algorithms (the data split
keeps the top-level ``seed``: another ``train.seed`` trains another model on the
same windows, which is how training noise is measured). After every epoch the
whole state goes atomically to ``models/tmp/vae-last.pt`` with a key of the
``seed``/``model``/``train`` params, the shards' hash and the package's source
code; a new run with the same key (the stage killed, even by SIGKILL, and
started again) resumes after the last finished epoch and ends bitwise-equal to
an uninterrupted run. A different key starts over. The file stays after the
last epoch, and with the constant learning rate ``train.epochs`` is not part of
the key: a finished run asked for more epochs (``-S train.epochs=144`` after
72) continues from it, into a new MLflow run tagged ``continued_from_run``, and
ends with the weights of the longer run from the start (the KL warm-up counts
steps, not a share of the run). Only the curves can differ: the shorter run's
last epoch was validated even where ``train.eval_every`` would have skipped it.

``train.num_processes > 1`` re-launches the stage under ``torch.distributed.run``
(DistributedDataParallel, NCCL on CUDA, Gloo on CPU); ``train.batch_size`` is per
process, every process streams its own share of the batches, and rank 0 alone
evaluates, writes files and logs to MLflow.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from midistyle import layout
from midistyle.augment import transpose
from midistyle.config import Params, TrainParams, as_dict
from midistyle.errors import UserError
from midistyle.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from midistyle.model import CHECKPOINT_KIND, StyleVAE, VAEConfig
from midistyle.recon import add_counts, count_cells, reconstruct, scores, tune_onset_threshold, tune_threshold
from midistyle.shards import Batch, ShardIndex
from midistyle.tracking import NullRun, start_run

log = logging.getLogger(__name__)

STAGE = "train_vae"
ACTIVE_VARIANCE = 0.01  # a latent dimension is active when Var(mu) over val exceeds this
EVAL_BATCH = 256  # windows per batch when generating (free decoding is sequential over steps)
CURVE_COLUMNS = (  # metrics/train_vae_curves.csv; the last column is dvc plots' default y
    "epoch", "train_recon", "train_kl", "train_kl_bits_per_dim", "train_kl_weight", "train_total",
    "val_recon", "val_kl", "val_kl_bits_per_dim", "val_kl_weight", "val_precision", "val_recall", "val_f1",
    "val_onset_f1", "val_threshold", "val_onset_threshold", "val_active_dims", "val_total",
)
LOSS_TERMS = ("recon", "kl", "kl_bits_per_dim", "total")  # averaged over the windows of an epoch


@dataclass(frozen=True)
class Paths:
    """Where the stage reads and writes, relative to the working directory (the repo root under DVC)."""

    shards: Path = layout.SHARDS
    model: Path = layout.VAE
    metrics: Path = layout.TRAIN_METRICS
    curves: Path = layout.TRAIN_CURVES
    last: Path = layout.VAE_LAST  # the resumable checkpoint (git-ignored, not a DVC out)


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @classmethod
    def from_env(cls) -> "Dist":
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)),
                   int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", 1))))

    @property
    def main(self) -> bool:
        return self.rank == 0


# ---------------------------------------------------------------- loss
def vae_loss(step_nll: torch.Tensor, lengths: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             kl_weight: float, free_bits: float) -> dict[str, torch.Tensor]:
    """step_nll (B, W) nats from the model's output; lengths (B,); mu, logvar (B, Z) -> loss terms."""
    B, W = step_nll.shape
    mask = (torch.arange(W, device=step_nll.device)[None, :] < lengths[:, None]).to(step_nll.dtype)  # padding -> 0
    recon = (step_nll * mask).sum() / B  # summed per window, averaged over the batch
    kl_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean(0)  # (Z,) batch-averaged nats
    total = recon + kl_weight * kl_dim.clamp(min=free_bits).sum()  # free bits: no pull below free_bits nats
    return {"total": total, "recon": recon, "kl": kl_dim.sum(), "kl_bits_per_dim": kl_dim.mean() / math.log(2)}


def model_loss(model: torch.nn.Module, x: torch.Tensor, lengths: torch.Tensor, pos_weight: torch.Tensor,
               kl_weight: float, free_bits: float) -> dict[str, torch.Tensor]:
    """Teacher-forced pass of ``model`` (a StyleVAE, or DDP around one) on x (B, W, 2, 2, P) -> loss terms."""
    logits, mu, logvar, _ = model(x, lengths)
    step_nll = getattr(model, "module", model).reconstruction_nll(logits, x, pos_weight)
    return {**vae_loss(step_nll, lengths, mu, logvar, kl_weight, free_bits), "mu": mu.detach()}


def train_step(model: torch.nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, lengths: torch.Tensor,
               pos_weight: torch.Tensor, kl_weight: float, tp: TrainParams) -> dict[str, torch.Tensor]:
    """One optimisation step on a batch: x (B, W, 2, 2, P), lengths (B,) -> the loss terms (with graph)."""
    # bf16: the matmuls of the forward pass (and so of its backward) in bfloat16, 2.4x the fp32 rate on CPUs
    # with avx512_bf16; parameters, gradients and Adam's state stay fp32
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=tp.precision == "bf16"):
        terms = model_loss(model, x, lengths, pos_weight, kl_weight, tp.free_bits)
    if not torch.isfinite(terms["total"]):
        raise UserError(f"train_vae: the loss became {terms['total'].item()} (try a lower train.lr or train.clip_norm)")
    opt.zero_grad(set_to_none=True)
    terms["total"].backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), tp.clip_norm)  # GRUs: keep rare large gradients in check
    opt.step()
    return terms


def lr_at(step: int, total_steps: int, tp: TrainParams) -> float:
    """The learning rate of optimisation step ``step`` of ``total_steps``: train.lr, or its cosine decay to train.min_lr."""
    if tp.lr_schedule == "constant":
        return tp.lr
    progress = min(1.0, step / max(total_steps - 1, 1))
    return tp.min_lr + 0.5 * (tp.lr - tp.min_lr) * (1.0 + math.cos(math.pi * progress))


def kl_weight_at(step: int, steps_per_epoch: int, tp: TrainParams) -> float:
    """Linear warm-up 0 -> train.kl_weight over train.kl_anneal_epochs epochs, per optimisation step."""
    if tp.kl_anneal_epochs == 0:
        return tp.kl_weight
    return tp.kl_weight * min(1.0, step / (tp.kl_anneal_epochs * steps_per_epoch))


def note_density(index: ShardIndex, split: str = "train") -> np.ndarray:
    """Share of the cells inside ``lengths`` that are on, per channel (sounding, onset); one shard at a time."""
    on, cells = np.zeros(2), 0
    for shard in (s for s in index.shards if s["split"] == split):
        b = index.read_shard(shard)
        on += b.rolls.sum(axis=(0, 1, 2, 4))  # (2,): padding is all zeros, so no mask is needed
        cells += int(b.lengths.sum()) * 2 * b.rolls.shape[-1]  # steps x hands x pitches
    if cells == 0:
        raise UserError(f"{index.root}: no {split} windows")
    return on / cells


def pos_weights(index: ShardIndex, tp: TrainParams) -> list[float]:
    if tp.pos_weight is not None:
        return [tp.pos_weight, tp.pos_weight]
    return [float(min((1 - d) / d, tp.max_pos_weight)) if d > 0 else tp.max_pos_weight for d in note_density(index)]


# ---------------------------------------------------------------- data
def to_tensors(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch -> x float (B, W, 2, 2, P), lengths int64 (B,) on ``device``."""
    x = torch.from_numpy(batch.rolls).to(device=device, dtype=torch.float32)
    return x, torch.from_numpy(batch.lengths.astype(np.int64)).to(device)


def spread_windows(index: ShardIndex, split: str, n: int) -> Batch:
    """``n`` windows spread evenly over a split (always the same ones), read one shard at a time."""
    total = index.count(split)
    if total == 0:
        raise UserError(f"{index.root}: no {split} windows (the val split picks the decision threshold)")
    picks = np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(np.int64))
    parts, offset = [], 0
    for shard in (s for s in index.shards if s["split"] == split):
        inside = picks[(picks >= offset) & (picks < offset + shard["windows"])] - offset
        if len(inside):
            parts.append(index.read_shard(shard).take(inside))
        offset += shard["windows"]
    return Batch.concat(parts)


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(vae: StyleVAE, index: ShardIndex, split: str, pos_weight: torch.Tensor, kl_weight: float,
             free_bits: float, device: torch.device) -> dict[str, float]:
    """Teacher-forced loss terms with z = mu over a whole split, and its active latent dimensions."""
    vae.eval()
    sums = dict.fromkeys(LOSS_TERMS, 0.0)
    mu_sum = mu_sq = None
    n = 0
    for batch in index.iter_batches(split, EVAL_BATCH, shuffle=False, seed=0):
        x, lengths = to_tensors(batch, device)
        terms = model_loss(vae, x, lengths, pos_weight, kl_weight, free_bits)
        mu = terms["mu"]
        for k in sums:
            sums[k] += float(terms[k]) * len(batch)
        mu64 = mu.double()
        mu_sum = mu64.sum(0) if mu_sum is None else mu_sum + mu64.sum(0)
        mu_sq = mu64.pow(2).sum(0) if mu_sq is None else mu_sq + mu64.pow(2).sum(0)
        n += len(batch)
    out = {k: v / n for k, v in sums.items()}
    variance = mu_sq / n - (mu_sum / n) ** 2  # (Z,) of mu over the split
    out["kl_weight"] = kl_weight
    out["active_dims"] = int((variance > ACTIVE_VARIANCE).sum())
    return out


def free_decoding(vae: StyleVAE, index: ShardIndex, split: str, threshold: float, device: torch.device) -> dict:
    """precision/recall/f1 (+ onset_*, other_f1, density and polyphony ratios) of free decoding over a split."""
    counts = None
    for batch in index.iter_batches(split, EVAL_BATCH, shuffle=False, seed=0):
        own = reconstruct(vae, batch.rolls, batch.lengths, threshold, device) > threshold
        other = reconstruct(vae, batch.rolls, batch.lengths, threshold, device, other_z=True) > threshold
        counts = add_counts(counts, count_cells(own, batch.rolls, batch.lengths, other))
    return scores(counts)


# ---------------------------------------------------------------- checkpoints
def stage_params(params: Params) -> dict:
    """The params this stage reads (dvc.yaml's ``seed``, ``model``, ``train``): what its checkpoints store."""
    return {"seed": params.seed, "model": as_dict(params.model), "train": as_dict(params.train)}


def source_digest() -> str:
    """sha256 of the midistyle package's source files: a checkpoint of other code is never resumed."""
    h = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def run_key(params: Params, shards_hash: str) -> str:
    """Names what a checkpoint was trained from: a resume needs the same seed, model, train params, data and code.

    ``train.epochs`` is left out under the constant learning rate, so that a
    finished run can be continued to more epochs; a cosine schedule decays over
    the run's steps, so there the number of epochs is part of the key.
    """
    relevant = stage_params(params)
    if params.train.lr_schedule == "constant":
        relevant["train"] = {k: v for k, v in relevant["train"].items() if k != "epochs"}
    text = json.dumps(relevant, sort_keys=True) + shards_hash + source_digest()
    return hashlib.sha256(text.encode()).hexdigest()


def save_checkpoint(ckpt: dict, path: Path) -> None:
    """torch.save to memory, then temp file + os.replace: a killed run never leaves half a checkpoint."""
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    atomic_write_bytes(path, buf.getvalue())


def stage_checkpoint(ckpt: dict) -> dict:
    """``models/vae.pt``: the resumable checkpoint less where the run was logged and its resume key.

    The MLflow run id says nothing about what was computed; keeping it out
    makes two identical runs write identical bytes. The run is found from the
    file's md5 instead (``tracking.find_runs_for_output``). The run key holds a
    digest of the package's source: kept in, any edit of the code (a docstring)
    would change the bytes of the same weights, and DVC would run every later
    stage again. Resuming reads ``models/tmp/vae-last.pt``, which keeps it.
    """
    return {k: v for k, v in ckpt.items() if k not in ("mlflow_run_id", "run_key")}


def load_resumable(path: Path, key: str, epochs: int) -> dict | None:
    """The temporary checkpoint when it belongs to this run (same key, at most ``epochs`` epochs), else None."""
    if not path.exists():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as exc:  # written atomically, so only a foreign file
        log.warning("%s: unreadable (%s); starting over", path, exc)
        return None
    if ckpt.get("run_key") != key:
        log.info("%s: from other params, data or code; starting over", path)
        return None
    if ckpt["epoch"] > epochs:
        log.info("%s: %d epochs, more than train.epochs %d; starting over", path, ckpt["epoch"], epochs)
        return None
    return ckpt


def finished(ckpt: dict) -> bool:
    """Whether a resumable checkpoint is the end of its run (rather than of an interrupted epoch)."""
    return ckpt["epoch"] == ckpt["params"]["train"]["epochs"]


# ---------------------------------------------------------------- the run
def cpu_cores() -> int:
    """Cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pick_device(choice: str, dist: Dist) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise UserError("params.yaml: train.device: cuda, but torch sees no CUDA device")
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def threads_per_process(tp: TrainParams, dist: Dist) -> int:
    """train.threads, else the cores shared between the local processes (more threads than cores: 10x slower)."""
    return tp.threads or max(1, cpu_cores() // dist.local_world)


@contextmanager
def torch_settings(device: torch.device, dist: Dist, threads: int) -> Iterator[None]:
    """Deterministic algorithms and a thread count that shares the cores between local processes; restored after."""
    old_threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (before its first use)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.cuda.set_device(device)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(deterministic)


def train(params: Params, paths: Paths = Paths(), progress: bool = True,
          after_epoch: Callable[[int, dict], None] | None = None) -> dict | None:
    """Run the stage in this process (one rank of a torchrun job when WORLD_SIZE is set).

    Returns the metrics written to ``paths.metrics`` (None on ranks other than 0).
    ``after_epoch(epoch, row)`` is called after each epoch's checkpoint (tests
    use it to interrupt a run).
    """
    t_start = time.perf_counter()
    dist = Dist.from_env()
    device = pick_device(params.train.device, dist)
    if dist.world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        with torch_settings(device, dist, threads_per_process(params.train, dist)):
            return _train(params, paths, dist, device, progress, after_epoch, t_start)
    finally:
        if dist.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@dataclass
class State:
    """What a run carries from epoch to epoch; :func:`checkpoint` writes all of it."""

    vae: StyleVAE
    model: torch.nn.Module  # the VAE, or DistributedDataParallel around it
    opt: torch.optim.Optimizer
    key: str  # run_key(): what a checkpoint must match to be resumed
    shards_hash: str
    pos_weight: list[float]  # (sounding, onset), as stored in the checkpoint
    pw: torch.Tensor  # the same on the device
    history: list[dict]  # one row of CURVE_COLUMNS per finished epoch
    threshold: float | None  # the val threshold of the last epoch (None before the first one)
    resumed_from: int  # epochs finished before this process started
    resumed_run: str | None  # the MLflow run an interrupted run logged to (logging goes on there)
    continued_run: str | None  # the MLflow run of a finished shorter run continued here


@dataclass
class Clock:
    """Seconds this process spent training and evaluating, and the windows it trained on."""

    start: float
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    windows: int = 0


def _train(params: Params, paths: Paths, dist: Dist, device: torch.device, progress: bool,
           after_epoch: Callable | None, t_start: float) -> dict | None:
    """The training loop: every rank trains its share of an epoch, rank 0 validates, logs and checkpoints."""
    tp = params.train
    index = ShardIndex.open(paths.shards)
    steps = steps_per_epoch(index, tp, dist, paths.shards)
    state = start_state(params, paths, index, dist, device)
    val_subset = spread_windows(index, "val", tp.eval_windows) if dist.main else None
    log.info("train_vae: %d train windows, %d steps/epoch x %d process(es) on %s; pos_weight sounding %.1f onset %.1f",
             index.count("train"), steps, dist.world, device, *state.pos_weight)
    clock = Clock(t_start)
    with start_run(params, STAGE, state.resumed_run) if dist.main else nullcontext(NullRun()) as run:
        if state.resumed_from:
            run.set_tags({"resumed_from_epoch": state.resumed_from})
        if state.continued_run:
            run.set_tags({"continued_from_run": state.continued_run})
        for epoch in range(state.resumed_from, tp.epochs):
            t0 = time.perf_counter()
            train_row = train_epoch(params, state, index, epoch, steps, dist, device, progress, clock)
            if dist.main:
                if (epoch + 1) % tp.eval_every == 0 or epoch + 1 == tp.epochs:
                    row = validate(params, state, index, val_subset, epoch, train_row, device, clock)
                else:  # no validation this epoch: its val columns stay empty
                    row = {c: None for c in CURVE_COLUMNS} | {"epoch": epoch + 1} | {
                        f"train_{k}": v for k, v in train_row.items()}
                record_epoch(params, state, index, row, run, paths, t0)
                if after_epoch is not None:
                    after_epoch(epoch + 1, row)
            if dist.world > 1:
                torch.distributed.barrier()  # the other ranks wait for rank 0's evaluation
        if not dist.main:
            return None
        return finish_run(params, paths, state, index, val_subset, run, dist, device, clock)


def last_threshold(history: list[dict], fixed: float | None) -> float | None:
    """The threshold of the last validated epoch of ``history`` (``fixed``, train.threshold, before any)."""
    return next((row["val_threshold"] for row in reversed(history) if row["val_threshold"] is not None), fixed)


def steps_per_epoch(index: ShardIndex, tp: TrainParams, dist: Dist, shards: Path) -> int:
    """Optimisation steps of one epoch on each rank; an error when the windows make no batch."""
    steps = index.num_batches("train", tp.batch_size, dist.world, tp.epoch_windows, tp.balance_styles)
    if steps == 0:
        raise UserError(f"{shards}: {index.count('train')} training windows make no batch of "
                        f"train.batch_size {tp.batch_size} for each of {dist.world} processes")
    return steps


def start_state(params: Params, paths: Paths, index: ShardIndex, dist: Dist, device: torch.device) -> State:
    """Weights initialised from the seed, or the resumable checkpoint when it is of this run (same key)."""
    tp = params.train
    shards_hash = index.content_hash()
    key = run_key(params, shards_hash)
    torch.manual_seed(tp.seed)  # the initial weights
    vae = StyleVAE(VAEConfig.from_params(params.model, index.spec)).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=tp.lr)
    resumed = load_resumable(paths.last, key, tp.epochs)
    if dist.world > 1:
        torch.distributed.barrier()  # every rank has read the checkpoint before rank 0 may replace it
    if resumed is not None:
        vae.load_state_dict(resumed["model_state"])
        opt.load_state_dict(resumed["optimizer_state"])
        history = resumed["history"]
        pos_weight = [resumed["pos_weight"]["sounding"], resumed["pos_weight"]["onset"]]
        log.info("%s from %s after epoch %d of %d", "continuing a finished run" if finished(resumed) else "resuming",
                 paths.last, resumed["epoch"], tp.epochs)
    else:
        history, pos_weight = [], pos_weights(index, tp)
        if dist.main:
            paths.last.unlink(missing_ok=True)
    model = vae
    if dist.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(vae, device_ids=[device] if device.type == "cuda" else None)
    return State(vae, model, opt, key, shards_hash, pos_weight, torch.tensor(pos_weight, device=device), history,
                 threshold=last_threshold(history, tp.threshold), resumed_from=len(history),
                 # a finished run's MLflow run holds its params (immutable there): a continuation logs to a new one
                 resumed_run=resumed["mlflow_run_id"] if resumed and not finished(resumed) else None,
                 continued_run=resumed["mlflow_run_id"] if resumed and finished(resumed) else None)


def train_epoch(params: Params, state: State, index: ShardIndex, epoch: int, steps: int, dist: Dist,
                device: torch.device, progress: bool, clock: Clock) -> dict[str, float]:
    """One epoch on every rank, each its share of the batches -> the loss terms averaged over every rank's windows."""
    tp, seed = params.train, params.train.seed
    t0 = time.perf_counter()
    torch.manual_seed(seed * 1000 + epoch)  # reparameterisation noise and dropout of this epoch
    state.model.train()
    sums = torch.zeros(5, dtype=torch.float64, device=device)  # recon, kl, kl_bits, total, windows
    batches = index.iter_batches("train", tp.batch_size, shuffle=True, seed=seed, epoch=epoch, rank=dist.rank,
                                 world_size=dist.world, max_windows=tp.epoch_windows, balance_styles=tp.balance_styles)
    bar = tqdm(batches, total=steps, desc=f"epoch {epoch + 1}/{tp.epochs}", unit="batch", mininterval=1.0,
               disable=not (progress and dist.main))
    for i, batch in enumerate(bar):
        kl_w = kl_weight_at(epoch * steps + i, steps, tp)
        for group in state.opt.param_groups:
            group["lr"] = lr_at(epoch * steps + i, tp.epochs * steps, tp)
        x, lengths = to_tensors(batch, device)
        terms = train_step(state.model, state.opt, transpose(x, *tp.transpose), lengths, state.pw, kl_w, tp)
        B = len(batch)
        sums += torch.stack([terms[k].detach().double() * B for k in LOSS_TERMS]
                            + [torch.tensor(float(B), dtype=torch.float64, device=device)])
        if i % 10 == 0:
            bar.set_postfix(loss=f"{terms['total'].item():.1f}", kl_w=f"{kl_w:.2f}", refresh=False)
    bar.close()
    if dist.world > 1:
        torch.distributed.all_reduce(sums)  # totals over every rank's windows
    row = dict(zip(LOSS_TERMS, (sums[:4] / sums[4]).tolist()))
    row["kl_weight"] = kl_weight_at((epoch + 1) * steps, steps, tp)
    clock.train_seconds += time.perf_counter() - t0
    clock.windows += int(sums[4])
    return row


def validate(params: Params, state: State, index: ShardIndex, val_subset: Batch, epoch: int, train_row: dict,
             device: torch.device, clock: Clock) -> dict:
    """Rank 0 after an epoch: val loss terms, thresholds tuned (or fixed) on the val subset -> the epoch's row."""
    tp = params.train
    t0 = time.perf_counter()
    val = evaluate(state.vae, index, "val", state.pw, train_row["kl_weight"], tp.free_bits, device)
    if tp.threshold is None:
        state.threshold, s, _ = tune_threshold(state.vae, val_subset, device)
    else:
        state.threshold = tp.threshold
    onset_threshold, s = tune_onset_threshold(state.vae, val_subset, state.threshold, device)
    clock.eval_seconds += time.perf_counter() - t0
    return {"epoch": epoch + 1, **{f"train_{k}": v for k, v in train_row.items()},
            **{f"val_{k}": v for k, v in val.items()},
            "val_precision": s["precision"], "val_recall": s["recall"], "val_f1": s["f1"],
            "val_onset_f1": s["onset_f1"], "val_threshold": float(state.threshold),
            "val_onset_threshold": onset_threshold}


def record_epoch(params: Params, state: State, index: ShardIndex, row: dict, run, paths: Paths, t0: float) -> None:
    """Rank 0: the epoch's row into the history, MLflow and the curves file; then the resumable checkpoint."""
    epoch = row["epoch"]
    state.history.append({c: row[c] for c in CURVE_COLUMNS})
    run.log_metrics({**{k: v for k, v in row.items() if k != "epoch" and v is not None},
                     "epoch_seconds": time.perf_counter() - t0}, step=epoch)
    write_curves(paths.curves, state.history)
    save_checkpoint(checkpoint(params, state, index, epoch, run.run_id), paths.last)
    val = ("not validated" if row["val_total"] is None else
           f"val total {row['val_total']:.2f} f1 {row['val_f1']:.3f} @ {row['val_threshold']:.2f}, "
           f"{row['val_active_dims']} active dims")
    log.info("epoch %d/%d: train total %.2f (recon %.2f kl %.2f, weight %.2f) | %s | %.1f s", epoch,
             params.train.epochs, row["train_total"], row["train_recon"], row["train_kl"], row["train_kl_weight"],
             val, time.perf_counter() - t0)


def checkpoint(params: Params, state: State, index: ShardIndex, epoch: int, run_id: str | None) -> dict:
    """Everything a resume needs after ``epoch`` finished epochs (models/vae.pt: :func:`stage_checkpoint` of it)."""
    return {
        "kind": CHECKPOINT_KIND,
        "format": 1,
        "model_config": asdict(state.vae.cfg),
        "model_state": state.vae.state_dict(),
        "optimizer_state": state.opt.state_dict(),
        "epoch": epoch,  # epochs finished
        "params": stage_params(params),  # only what the stage reads: other params leave the bytes alone
        "run_key": state.key,
        "shards_hash": state.shards_hash,
        "styles": list(index.styles),
        "spec": index.spec.to_dict(),
        "threshold": None if state.threshold is None else float(state.threshold),  # None before a validation
        "pos_weight": {"sounding": state.pos_weight[0], "onset": state.pos_weight[1]},
        # No RNG state is needed to resume: each epoch re-seeds from (seed, epoch).
        "rng": {"seed": params.train.seed, "torch_seed_per_epoch": "seed * 1000 + epoch", "shard_order": "(seed, epoch)"},
        "history": state.history,
        "mlflow_run_id": run_id,
    }


def finish_run(params: Params, paths: Paths, state: State, index: ShardIndex, val_subset: Batch, run, dist: Dist,
               device: torch.device, clock: Clock) -> dict:
    """Rank 0 after the last epoch: test metrics, models/vae.pt, the metrics file and MLflow artifacts."""
    tp = params.train
    metrics = final_metrics(params, paths, state.vae, index, state.pw, state.history, state.threshold, run, device)
    save_checkpoint(stage_checkpoint(checkpoint(params, state, index, tp.epochs, run.run_id)), paths.model)
    metrics["timing"] = {
        "wall_seconds": round(time.perf_counter() - clock.start, 2),
        "train_seconds": round(clock.train_seconds, 2),
        "eval_seconds": round(clock.eval_seconds, 2),
        "windows_per_second": round(clock.windows / max(clock.train_seconds, 1e-9), 1),
        "epochs_this_run": tp.epochs - state.resumed_from,
        "resumed_from_epoch": state.resumed_from,
        "processes": dist.world,
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    atomic_write_json(paths.metrics, metrics)
    log_run_artifacts(run, params, paths, state.vae, index, val_subset, state.threshold, device)
    return metrics  # paths.last stays: a longer run of the same key continues from it


def final_metrics(params: Params, paths: Paths, vae: StyleVAE, index: ShardIndex, pw: torch.Tensor,
                  history: list[dict], threshold: float, run, device: torch.device) -> dict:
    """The final metrics (val of the last epoch, test by free decoding at the chosen threshold)."""
    tp = params.train
    last = history[-1]
    metrics = {
        "epochs": tp.epochs,
        "train_windows": index.count("train"),
        "threshold": float(threshold),
        "onset_threshold": float(vae.onset_threshold),
        "pos_weight": {"sounding": float(pw[0]), "onset": float(pw[1])},
        "train": {k: last[f"train_{k}"] for k in LOSS_TERMS},
        "val": {k: last[f"val_{k}"] for k in ("recon", "kl", "kl_bits_per_dim", "total", "precision", "recall",
                                              "f1", "onset_f1", "active_dims")},
    }
    if index.count("test"):
        test = evaluate(vae, index, "test", pw, last["train_kl_weight"], tp.free_bits, device)
        rec = free_decoding(vae, index, "test", threshold, device)
        metrics["test"] = {
            **{k: test[k] for k in ("recon", "kl", "kl_bits_per_dim", "total", "active_dims")},
            **{k: rec[k] for k in ("precision", "recall", "f1", "onset_precision", "onset_recall", "onset_f1",
                                   "other_f1", "density_ratio", "polyphony_ratio", "windows")},
            "kl_bits_per_window": test["kl"] / math.log(2),
        }
        run.log_metrics({f"test_{k}": v for k, v in metrics["test"].items()}, step=tp.epochs)
        log.info("test: free decoding precision %.3f recall %.3f f1 %.3f (onsets f1 %.3f) at threshold %.2f",
                 rec["precision"], rec["recall"], rec["f1"], rec["onset_f1"], threshold)
    else:
        log.warning("%s: no test windows; test metrics left out", paths.shards)
    return metrics


def write_curves(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CURVE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def log_run_artifacts(run, params: Params, paths: Paths, vae: StyleVAE, index: ShardIndex, val_subset: Batch,
                      threshold: float, device: torch.device) -> None:
    """The checkpoint, metrics, curves and a few val windows as MIDI + pictures (original above reconstruction)."""
    if not run.enabled:
        return
    from midistyle.pictures import draw_rolls
    from midistyle.roll import roll_to_midi, write_midi

    run.log_artifact(paths.model, "model")
    run.log_artifact(paths.metrics, "metrics")
    run.log_artifact(paths.curves, "metrics")
    n = min(params.train.log_reconstructions, len(val_subset))
    if n:
        spec = index.spec
        batch = val_subset.take(slice(0, n))
        probs = reconstruct(vae, batch.rolls, batch.lengths, threshold, device)
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(n):
                L = int(batch.lengths[i])
                piece = index.pieces[int(batch.piece[i])]
                name = f"val-{i:02d}"
                orig, rec = batch.rolls[i, :L], probs[i, :L] > threshold
                write_midi(roll_to_midi(orig, spec), Path(tmp) / f"{name}-original.mid")
                write_midi(roll_to_midi(rec, spec), Path(tmp) / f"{name}-reconstruction.mid")
                label = f"original: {piece['style']} / {Path(piece['file']).name}, step {int(batch.start[i])}"
                draw_rolls([(label, orig), ("probabilities (free decoding from z = mu)", probs[i, :L]),
                            (f"reconstruction (threshold {threshold:.2f})", rec)], Path(tmp) / f"{name}.png",
                           pitch_low=spec.pitch_low, steps_per_bar=spec.bar_steps)
            run.log_artifacts(tmp, "reconstructions")
    run.tag_outputs(paths.model)


# ---------------------------------------------------------------- entry point
def main(params: Params, script: str | Path) -> None:
    """The stage: under torchrun when ``train.num_processes > 1`` (re-launching ``script``), else in this process."""
    n = params.train.num_processes
    if n > 1 and "WORLD_SIZE" not in os.environ:
        env = {**os.environ, "OMP_NUM_THREADS": str(threads_per_process(params.train, Dist(local_world=n)))}
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", str(script)]
        log.info("re-launching under torchrun: %s", " ".join(cmd))
        rc = subprocess.run(cmd, env=env).returncode
        if rc != 0:
            raise UserError(f"train_vae: torchrun with {n} processes exited with status {rc} (see the errors above)")
        return
    train(params)
