"""guide.py: the protocol's points, seed by seed, each seed's variants on one machine; a seed split across machines
is trained again whole, its old records kept aside."""
import json
from dataclasses import replace

import pytest

from lab import guide
from plumbing.config import Config, Engine, run_identity
from model import Net, count_parameters
from plumbing.system import fingerprint, save_json


def test_every_point_is_a_list_of_distinct_runs_under_the_budget():
    for point, configs in guide.POINTS.items():
        assert len({tuple(run_identity(c).items()) for c in configs}) == len(configs), point
        assert len({guide.variant_name(c) for c in configs}) == len(configs), point
        assert all(count_parameters(Net.from_config(c)) < 8000 for c in configs), point
        assert all(c.l1 == 0 and c.seed == 0 for c in configs), point


def test_the_points_hold_what_the_guide_rows_compare():
    names = {point: [guide.variant_name(c) for c in configs] for point, configs in guide.POINTS.items()}
    assert set(names["batch_2"]) == {f"{n}_e3_bs2" for n in guide.BATCH_NORMS}
    assert {"bn_e3_nb2", "bn_e3_nb16", "bn_e3"} <= set(names["batch_64"])
    assert {"bn_e3_bs512_nb64", "bn_e3_bs512"} <= set(names["batch_512"])
    assert {"bn_e24_bs512", "bn_e24_bs512_lr0.05"} <= set(names["batch_512_equal_steps"])  # 24 epochs: 3 x 512/64
    assert set(names["recipe"]) == {"gn", "none", "gn2", "in", "bn"}  # the study's recipe: 20 epochs, batch 64


def record(config, test_acc, machine):
    return {"variant": "X", "config": {k: v for k, v in vars(config).items() if k != "data_dir"}, "fingerprint": machine,
            "epochs": [{"epoch": 1, "test_acc": test_acc, "seconds": 1.0}]}


def test_a_seed_split_across_machines_is_set_aside_and_a_whole_one_stays(tmp_path):
    configs = guide.seed_configs("recipe", 0, "data", "cpu")[:3]
    path, here, there = tmp_path / "recipe.json", {"cpu": "A"}, {"cpu": "B"}
    save_json({"summary": None, "runs": [record(c, 99.0, there) for c in configs[:2]]}, path)
    assert guide.unpair_a_split_seed(path, configs, there) == 0  # the same machine continues the seed
    assert guide.unpair_a_split_seed(path, configs, here) == 2   # another machine trains it again, whole
    assert json.loads(path.read_text())["runs"] == []
    aside = json.loads((tmp_path / "recipe_unpaired.json").read_text())
    assert [r["config"]["norm"] for r in aside["runs"]] == [c.norm for c in configs[:2]]
    save_json({"summary": None, "runs": [record(c, 99.0, there) for c in configs]}, path)
    assert guide.unpair_a_split_seed(path, configs, here) == 0  # a whole seed from one machine stays


def test_run_guide_trains_seed_by_seed_and_records_the_machine(tiny_mnist, tmp_path, monkeypatch):
    tiny = Config(epochs=1, train_subset=256, l1=0.0)
    monkeypatch.setattr(guide, "POINTS", {"a": [replace(tiny, norm="gn"), replace(tiny, norm="bn", bn_batch=2)],
                                          "b": [replace(tiny, norm="ln")]})
    monkeypatch.setattr(guide, "KEEPS_WEIGHTS", ("b",))
    lines = []
    guide.run_guide(["a", "b"], [0, 1], str(tiny_mnist), "cpu", tmp_path / "guide",
                    engine=Engine(str(tmp_path / "runs"), 2), log=lines.append)
    a = json.loads((tmp_path / "guide" / "a.json").read_text())
    assert [(r["config"]["seed"], r["config"]["norm"]) for r in a["runs"]] == [(0, "gn"), (0, "bn"), (1, "gn"), (1, "bn")]
    assert all(r["fingerprint"] == fingerprint(threads=1) for r in a["runs"])
    assert [s["variant"] for s in a["summary"]] == ["gn_e1_n256", "bn_e1_nb2_n256"] and a["summary"][0]["seeds"] == [0, 1]
    assert sorted(p.name for p in (tmp_path / "guide" / "models").iterdir()) == ["ln_e1_n256_seed0.pt",
                                                                                "ln_e1_n256_seed1.pt"]


def test_list_trains_nothing(capsys):
    assert guide.main(["--list", "--points", "adam_lr"]) == 0
    assert capsys.readouterr().out.startswith("adam_lr: bn_e3_lr0.0003, gn_e3_lr0.0003")


def test_bad_points_are_refused():
    with pytest.raises(SystemExit):
        guide.main(["--points", "nowhere"])


def selection_runs(val_acc, seeds=(0, 1, 2), diverged=()):
    """Records of lr_select_sgd: val_acc(norm, lr, seed) for each; (norm, lr, seed) in `diverged` diverged."""
    runs = []
    for seed in seeds:
        for c in guide.POINTS["lr_select_sgd"]:
            run = record(replace(c, seed=seed), 0.0, {"cpu": "A"})
            run["epochs"][-1]["val_acc"] = val_acc(c.norm, c.lr, seed)
            if (c.norm, c.lr, seed) in diverged:
                run["diverged"] = {"epoch": 1}
            runs.append(run)
    return {"summary": None, "runs": runs}


def test_the_chosen_lr_is_the_best_mean_on_validation_and_never_one_that_diverged(tmp_path):
    best = {"bn": 0.3, "gn": 0.1, "ln": 0.03}
    val_acc = lambda norm, lr, seed: 99.0 - abs(lr - best[norm]) + (0.5 if (norm, lr, seed) == ("gn", 1.0, 0) else 0)
    save_json(selection_runs(val_acc, seeds=(0, 1)), tmp_path / "lr_select_sgd.json")
    assert guide.chosen_lrs("lr_select_sgd", tmp_path) is None  # 2 of 3 seeds: nothing chosen yet
    assert guide.point_configs("sgd_chosen", tmp_path) == []
    save_json(selection_runs(val_acc, diverged={("bn", 0.3, 2)}), tmp_path / "lr_select_sgd.json")
    assert guide.chosen_lrs("lr_select_sgd", tmp_path) == {"bn": 0.1, "gn": 0.1, "ln": 0.03}  # BN's 0.3 diverged once
    chosen = guide.point_configs("sgd_chosen", tmp_path)
    assert [(c.norm, c.lr, c.optimizer, c.val_split) for c in chosen] == [("bn", 0.1, "sgd", 0), ("gn", 0.1, "sgd", 0),
                                                                         ("ln", 0.03, "sgd", 0)]


def test_a_chosen_point_waits_for_its_selection_then_catches_up_the_seeds_before(tmp_path, monkeypatch):
    trained = []
    monkeypatch.setattr(guide, "train_seed", lambda point, configs, *rest: trained.append((point, configs[0].seed)))
    monkeypatch.setattr("plumbing.system.fingerprint", lambda threads: {"cpu": "A"})
    guide.run_guide(["sgd_chosen"], [0, 1, 2], "data", "cpu", tmp_path)
    assert trained == []  # no selection yet: nothing to train
    save_json(selection_runs(lambda norm, lr, seed: 99.0 - lr), tmp_path / "lr_select_sgd.json")
    guide.run_guide(["batch_8", "sgd_chosen"], [0, 1], "data", "cpu", tmp_path)
    assert trained == [("batch_8", 0), ("sgd_chosen", 0), ("batch_8", 1), ("sgd_chosen", 0), ("sgd_chosen", 1)]


def test_the_machine_effect_trains_gn_seeds_0_to_5_into_this_machines_file(tiny_mnist, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("lab.runner.run_configs", lambda configs, path, *rest, **kw: calls.append((configs, path)))
    monkeypatch.setattr("plumbing.system.fingerprint", lambda threads: {"cpu": "A"})
    assert guide.main(["--machine-effect", "--results", str(tmp_path), "--data-dir", str(tiny_mnist),
                       "--device", "cpu"]) == 0
    [(configs, path)] = calls
    assert path == tmp_path / f"machine_{guide.fingerprint_key({'cpu': 'A'})}.json"
    assert [(c.norm, c.batch_size, c.epochs, c.seed) for c in configs] == [("gn", 64, 3, s) for s in range(6)]


def test_list_says_what_is_recorded_and_what_is_left_with_its_time(tmp_path, capsys):
    configs = guide.POINTS["batch_512_equal_steps"]
    runs = [{"variant": "X", "config": {**vars(replace(c, seed=seed)), "data_dir": None},
             "epochs": [{"epoch": 1, "test_acc": 99.0, "seconds": 60.0 * (1 + seed)}]}
            for seed, batch in ((0, configs), (1, configs[:2])) for c in batch]
    save_json({"summary": None, "runs": runs}, tmp_path / "batch_512_equal_steps.json")
    line, left, minutes, untimed = guide.progress("batch_512_equal_steps", [0, 1, 2], tmp_path)
    # seed 1 half done; 2 runs of seed 1 and 4 of seed 2 to go; each variant's time the mean of its runs
    assert line == ("seeds 0 recorded; seed 1: 2 of 4 runs; to go: 6 runs, about 7 run-minutes at the recorded "
                    "times") and (left, untimed) == (6, 0) and minutes == 2 * 1 + 1.5 * 2 + 1 * 2
    assert guide.main(["--list", "--points", "batch_512_equal_steps", "--results", str(tmp_path), "--seeds", "0",
                       "1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == ("in all: 2 runs to go over seeds 0, 1, about 0.0 run-hours "
                                                        "at the recorded times")


def test_list_on_a_fresh_folder_says_nothing_is_timed_yet(tmp_path, capsys):
    assert guide.main(["--list", "--points", "adam_lr", "--results", str(tmp_path), "--seeds", "0"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == ("in all: 6 runs to go over seeds 0, about 0.0 run-hours at "
                                                        "the recorded times (6 runs not timed yet)")
