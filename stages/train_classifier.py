"""DVC stage `train_classifier`: models/vae.pt + data/shards -> models/latent_classifier.pt (+ metrics/classifier.json)."""

from midistyle.classifier import train_stage
from midistyle.stage import run_stage

if __name__ == "__main__":
    run_stage(lambda params: train_stage(params))
