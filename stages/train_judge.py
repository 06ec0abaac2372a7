"""DVC stage `train_judge`: data/shards -> models/judge.pt (+ metrics/judge.json). It reads no VAE."""

from midistyle.judge import train_stage
from midistyle.stage import run_stage

if __name__ == "__main__":
    run_stage(lambda params: train_stage(params))
