"""results.py: a recorded run's variant key, grouping runs, and the one summary over seeds."""
import statistics

from plumbing.config import STUDY_L1
from plumbing.results import diverged_seeds, finished, group_by, over_seeds, run_key


def test_run_key_of_a_recorded_run():
    assert run_key({"config": {"norm": "bn", "l1": STUDY_L1}}) == "bn_l1"
    assert run_key({"config": {"norm": "ln"}}) == "ln"
    assert run_key({"config": {"norm": "gn", "gn_groups": 2}}) == "gn2"


def test_group_by_keeps_the_order_keys_first_appear():
    assert group_by([3, 1, 4, 1, 5, 9, 2, 6], lambda n: n % 3) == {0: [3, 9, 6], 1: [1, 4, 1], 2: [5, 2]}
    assert list(group_by([3, 1, 4], lambda n: n % 3)) == [0, 1]


def test_over_seeds_is_statistics_mean_and_stdev():
    values = [99.41, 99.38, 99.47]
    assert over_seeds(values) == {"mean": statistics.mean(values), "std": statistics.stdev(values), "min": 99.38,
                                  "max": 99.47}
    assert over_seeds(iter(values), per_seed=True)["values"] == values
    assert over_seeds([99.0]) == {"mean": 99.0, "std": 0.0, "min": 99.0, "max": 99.0}  # one seed: no spread
    assert over_seeds([]) == {"mean": None, "std": None, "min": None, "max": None}  # every seed diverged


def test_diverged_runs_are_listed_not_averaged():
    runs = [{"config": {"seed": 0}}, {"config": {"seed": 1}, "diverged": {"epoch": 2, "step": 900}}]
    assert finished(runs) == runs[:1]
    assert diverged_seeds(runs) == [{"seed": 1, "epoch": 2, "step": 900}]
