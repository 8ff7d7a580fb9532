"""`--pick fastest-within-budget` must not be decided by a latency gap inside the measurement noise."""
from edgesparse.search.tune import LATENCY_TIE, pick


def row(n, latency, accuracy, macs):
    return {"number": n, "latency_ms": latency, "accuracy": accuracy, "macs": macs, "bytes": macs // 100}


def test_a_latency_tie_goes_to_the_more_accurate_smaller_point():
    # stop 19's run: trial 37 was 0.2 us faster than trial 29, which had fewer MACs and more accuracy
    rows = [row(37, 0.0937, 99.17, 13_192_384), row(29, 0.0939, 99.72, 10_800_000), row(5, 0.20, 99.9, 50_000_000)]
    assert pick(rows, "fastest-within-budget", 97.22, 1.0)["number"] == 29


def test_a_real_latency_gap_still_decides():
    gap = 1 + 3 * LATENCY_TIE
    rows = [row(1, 0.1, 98.0, 10_000_000), row(2, 0.1 * gap, 99.5, 9_000_000)]
    assert pick(rows, "fastest-within-budget", 99.0, 1.0)["number"] == 1


def test_the_budget_is_applied_before_the_tie():
    rows = [row(1, 0.1, 97.0, 1_000), row(2, 0.1005, 99.6, 2_000), row(3, 0.1001, 96.0, 500)]
    # 3 is outside the 1-point budget of 98.0 whatever its latency
    assert pick(rows, "fastest-within-budget", 98.0, 1.0)["number"] == 2
