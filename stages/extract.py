"""DVC stage `extract`: data/raw/ -> data/shards/ (+ data/splits.json, metrics/extract.json)."""

from midistyle.extract import extract
from midistyle.stage import run_stage

if __name__ == "__main__":
    run_stage(lambda params: extract(params))
