"""DVC stage `transfer`: test pieces of data/raw -> data/transfers/ (MIDI per method and direction + manifest.csv)."""

from midistyle.stage import run_stage
from midistyle.transfer import transfer_stage

if __name__ == "__main__":
    run_stage(lambda params: transfer_stage(params))
