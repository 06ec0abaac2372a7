"""DVC stage `train_vae`: data/shards/ -> models/vae.pt (+ metrics/train_vae.json, metrics/train_vae_curves.csv).

Resumes from models/tmp/vae-last.pt after an interruption, and continues a
finished shorter run of the same key from it; with train.num_processes > 1 it
re-launches itself under torchrun (see midistyle.train).
"""

from midistyle.stage import run_stage
from midistyle.train import main

if __name__ == "__main__":
    run_stage(lambda params: main(params, script=__file__))
