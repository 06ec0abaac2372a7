"""DVC stage `evaluate`: models + data/transfers -> metrics/eval.json and the HTML report in data/report/."""

from midistyle.evaluate import evaluate
from midistyle.stage import run_stage

if __name__ == "__main__":
    run_stage(lambda params: evaluate(params))
