"""benchmarks/search_refusals.py's AUC on hand-made scores with known answers."""

import math

import numpy as np

from tests.helpers_bench import load_benchmark


def test_auc_known_answers(monkeypatch):
    auc = load_benchmark("search_refusals", monkeypatch).auc  # it imports `valsearch`
    refused = np.array([True, True, False, False])
    assert auc(np.array([3.0, 4.0, 1.0, 2.0]), refused) == 1.0  # every refused window scores above every accepted one
    assert auc(np.array([1.0, 2.0, 3.0, 4.0]), refused) == 0.0
    assert auc(np.array([1.0, 1.0, 1.0, 1.0]), refused) == 0.5  # ties count half
    assert auc(np.array([3.0, 1.0, 2.0, 0.0]), refused) == 0.75  # 3 of the 4 pairs in order
    assert math.isnan(auc(np.array([1.0, 2.0]), np.array([True, True])))  # nothing accepted to compare with
