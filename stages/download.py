"""DVC stage `download`: the selected profile's MIDI collections -> data/raw/ (+ metrics/download.json).

Usage: python stages/download.py [--params PATH]   (from the repository root)
"""

import argparse

from midistyle import layout
from midistyle.download import download_all
from midistyle.stage import run_stage

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    args = parser.parse_args()
    run_stage(lambda params: download_all(params, layout.RAW, layout.DOWNLOAD_METRICS), args.params)
