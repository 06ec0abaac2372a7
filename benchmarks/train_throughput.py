"""Training throughput of the configured GRU-VAE, and how close it runs to this machine's matmul peak.

    python benchmarks/train_throughput.py                   # params.yaml's model on data/shards
    python benchmarks/train_throughput.py --synthetic       # random rolls of the right shape (no data needed)
    python benchmarks/train_throughput.py --steps 30 --batch-size 128 --json out.json
    python benchmarks/train_throughput.py --batch-size 64 128   # side by side: the ratio of windows/s to the first

In one run it measures

(a) windows/s of training steps (forward, loss, backward, clip, Adam: midistyle.train.train_step),
(b) the FLOPs of those steps, counted by torch.utils.flop_counter.FlopCounterMode (it sees
    the GRUs' matmuls: on CPU nn.GRU runs as aten addmm/mm) and, as a cross-check, analytically:
    2 * in * out per linear map per frame, GRU = 3 gates x (input + hidden) x hidden, backward = 2x forward,
(c) the fp32 matmul rate of torch.matmul on large square matrices (the practical peak),

and prints the achieved FLOP/s as a share of that peak.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from midistyle.config import load_params
from midistyle.model import StyleVAE, VAEConfig
from midistyle.roll import RollSpec
from midistyle.shards import Batch, ShardIndex
from midistyle.train import Dist, cpu_cores, pick_device, pos_weights, to_tensors, train_step


def analytic_forward_flops(cfg: VAEConfig, lengths: np.ndarray) -> float:
    """Multiply-adds x 2 of the linear maps of one forward pass over a batch (gate nonlinearities left out).

    GRU steps are beat-sized: k = frames_per_step frames per step, T = W / k steps.
    """
    P, W, Z, k = cfg.n_pitches, cfg.window_steps, cfg.latent_size, cfg.frames_per_step
    H, Hd = cfg.encoder_hidden, cfg.decoder_hidden
    steps = float(np.sum(np.ceil(np.asarray(lengths) / k)))  # the packed encoder reads only the steps inside lengths
    B, T, clock = len(lengths), W // k, cfg.steps_per_bar // k

    def gru(inp: int, hid: int) -> int:  # per step: 3 gates, input and hidden projections
        return 2 * 3 * hid * (inp + hid)

    if cfg.encoder == "per_hand":
        enc = steps * 2 * 2 * gru(k * 2 * P, H)  # 2 hands x 2 directions
        enc_out = 4 * H
    else:
        enc = steps * 2 * gru(k * 4 * P, H)
        enc_out = 2 * H
    dense = B * 2 * (enc_out * cfg.dense_size + 2 * cfg.dense_size * Z)
    frame = k * cfg.frame_size if cfg.autoregressive else 0
    heads = T * 2 * Hd * 2 * k * cfg.states * P  # the two hand heads at every step
    if cfg.decoder == "hierarchical":
        Hc, N = cfg.conductor_hidden, cfg.bars
        conductor = 2 * Z * Hc + N * (gru(Z, Hc) + 2 * Hc * Hd)  # z -> state, GRU over bars, bar -> bottom state
        dec = B * (conductor + T * gru(Hc + clock + frame, Hd) + heads)
    else:
        dec = B * (2 * Z * Hd + T * gru(Z + clock + frame, Hd) + heads)  # z -> h0, GRU over the window, heads
    return enc + dense + dec


def matmul_peak(n: int, seconds: float, device: torch.device) -> float:
    """FLOP/s of fp32 torch.matmul on n x n matrices, best of repeated runs over about ``seconds``."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(2):
        torch.matmul(a, b)
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        sync(device)
        t = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batches(spec: RollSpec, batch_size: int, n: int, density: float = 0.05) -> list[Batch]:
    """Random rolls with about ``density`` of the cells on and full lengths."""
    rng = np.random.default_rng(0)
    W, P = spec.window_steps, spec.n_pitches
    return [Batch(rng.random((batch_size, W, 2, 2, P)) < density, np.full(batch_size, W, np.int32),
                  np.zeros(batch_size, np.int16), np.zeros(batch_size, np.int32), np.zeros(batch_size, np.int32))
            for _ in range(n)]


def prepare(params, args, bs: int, device: torch.device) -> dict:
    """A fresh model, optimiser and ``warmup + steps`` batches of ``bs`` windows, and the FLOPs of one step."""
    tp = params.train
    n = args.warmup + args.steps
    if args.synthetic:
        spec = RollSpec.from_params(params.extract)
        batches = synthetic_batches(spec, bs, n)
        pw = torch.tensor([tp.pos_weight or 19.0] * 2, device=device)
    else:
        index = ShardIndex.open(args.shards)
        spec = index.spec
        batches = []
        for epoch in range(1000):  # enough epochs of a small split to fill n batches
            batches += [b for b in index.iter_batches("train", bs, shuffle=True, seed=params.seed, epoch=epoch)
                        if len(b) == bs]
            if len(batches) >= n:
                break
        batches = batches[:n]
        pw = torch.tensor(pos_weights(index, tp), device=device)
    cfg = VAEConfig.from_params(params.model, spec)
    torch.manual_seed(params.seed)
    vae = StyleVAE(cfg).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=tp.lr)
    data = [to_tensors(b, device) for b in batches]

    # (b) FLOPs of the timed steps, counted (a separate pass: the counter slows the ops down)
    with FlopCounterMode(display=False) as counter:
        for x, lengths in data[args.warmup:]:
            logits, mu, logvar, _ = vae(x, lengths)
            logits.float().sum().backward()  # the same matmuls as the real loss's backward
    vae.zero_grad(set_to_none=True)
    fwd = np.mean([analytic_forward_flops(cfg, b.lengths) for b in batches[args.warmup:]])
    for x, lengths in data[:args.warmup]:
        train_step(vae, opt, x, lengths, pw, tp.kl_weight, tp)
    return {"bs": bs, "cfg": cfg, "spec": spec, "vae": vae, "opt": opt, "pw": pw, "data": data[args.warmup:],
            "counted": counter.get_total_flops() / args.steps, "analytic": 3 * fwd,  # backward ~ 2 x forward
            "step_s": []}


def time_steps(run: dict, tp, device: torch.device) -> None:
    """(a) one timed pass over the run's batches: seconds per training step appended to run["step_s"]."""
    sync(device)
    t0 = time.perf_counter()
    for x, lengths in run["data"]:
        train_step(run["vae"], run["opt"], x, lengths, run["pw"], tp.kl_weight, tp)
    sync(device)
    run["step_s"].append((time.perf_counter() - t0) / len(run["data"]))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--shards", default="data/shards")
    ap.add_argument("--synthetic", action="store_true", help="random rolls instead of the shards")
    ap.add_argument("--batch-size", type=int, nargs="+",
                    help="default: train.batch_size; several: each timed in turn, --rounds times, side by side")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--rounds", type=int, default=3, help="timed passes per batch size, alternating; the fastest counts")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--matmul-size", type=int, default=2048)
    ap.add_argument("--matmul-seconds", type=float, default=3.0)
    ap.add_argument("--threads", type=int, default=cpu_cores())
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    params = load_params(args.params)
    tp = params.train
    device = pick_device(tp.device, Dist())
    torch.set_num_threads(args.threads)
    runs = [prepare(params, args, bs, device) for bs in (args.batch_size or [tp.batch_size])]
    for _ in range(args.rounds):  # alternating, so a slower spell of the machine hits every batch size alike
        for run in runs:
            time_steps(run, tp, device)
    # (c) the machine's fp32 matmul rate, in the same process and thread setting
    peak = matmul_peak(args.matmul_size, args.matmul_seconds, device)

    out = []
    for run in runs:
        cfg, spec, bs, step_s, counted = run["cfg"], run["spec"], run["bs"], min(run["step_s"]), run["counted"]
        achieved = counted / step_s
        res = {
            "device": str(device),
            "threads": torch.get_num_threads(),
            "data": "synthetic" if args.synthetic else str(args.shards),
            "model": {k: getattr(cfg, k) for k in ("latent_size", "encoder", "encoder_hidden", "dense_size",
                                                   "decoder", "conductor_hidden", "decoder_hidden", "autoregressive",
                                                   "output")},
            "parameters": sum(p.numel() for p in run["vae"].parameters()),
            "batch_size": bs,
            "window": [spec.window_steps, 2, 2, spec.n_pitches],
            "seconds_per_step": step_s,
            "windows_per_second": bs / step_s,
            "windows_per_second_ratio": (bs / step_s) / (runs[0]["bs"] / min(runs[0]["step_s"])),
            "flops_per_step_counted": counted,
            "flops_per_step_analytic": run["analytic"],
            "achieved_flops_per_second": achieved,
            "matmul_peak_flops_per_second": peak,
            "matmul_size": args.matmul_size,
            "share_of_peak": achieved / peak,
        }
        out.append(res)
        print(f"device {res['device']} ({res['threads']} threads), {res['parameters']:,} parameters, batch {bs} "
              f"of {tuple(res['window'])} ({res['data']})")
        print(f"throughput    {res['windows_per_second']:.1f} windows/s ({step_s * 1000:.0f} ms/step, fastest of "
              f"{args.rounds}); x{res['windows_per_second_ratio']:.2f} batch {runs[0]['bs']}'s")
        print(f"FLOPs/step    {counted / 1e9:.2f} G counted (FlopCounterMode), {run['analytic'] / 1e9:.2f} G analytic "
              f"(3 x forward)")
        print(f"achieved      {achieved / 1e9:.2f} GFLOP/s")
        print(f"matmul peak   {peak / 1e9:.2f} GFLOP/s (fp32 {args.matmul_size}x{args.matmul_size} torch.matmul)")
        print(f"share         {res['share_of_peak']:.1%} of the measured peak")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")  # one entry per batch size
    return out


if __name__ == "__main__":
    main()
