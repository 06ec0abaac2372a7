"""DVC stage `tune_transfer`: validation pieces -> models/transfer_settings.json (strength chosen per direction) + data/transfer_sweep/."""

from midistyle.stage import run_stage
from midistyle.tuning import tune_stage

if __name__ == "__main__":
    run_stage(lambda params: tune_stage(params))
