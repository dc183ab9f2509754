"""config.py: the settings of a run, the variants compared, and the one place run folders are named."""
from dataclasses import asdict, replace

import pytest

from plumbing.config import (DEFAULTS, IDENTITY, STUDY_L1, VARIANTS, Config, config_from_record, run_identity, run_label,
                    run_name, same_run, variant_key)
from model import NORMS


@pytest.mark.parametrize("config,name", [
    (Config(), "bn_seed0"),
    (Config(norm="gn"), "gn_seed0"),
    (Config(norm="ln", seed=2), "ln_seed2"),
    (Config(norm="bn", l1=STUDY_L1), "bn_l1_seed0"),                 # the study's lambda is not named
    (Config(norm="bn", l1=1e-4), "bn_l1_0.0001_seed0"),               # any other is
    (Config(norm="bn", epochs=3, batch_size=512, seed=1), "bn_e3_bs512_seed1"),  # a sweep run
    (Config(epochs=1, train_subset=1000), "bn_e1_n1000_seed0"),      # main.py --dry-run
    (Config(norm="gn", lr=0.1, optimizer="sgd"), "gn_lr0.1_sgd_seed0"),
    (Config(norm="gn", gn_groups=2, dropout=0.0, degrees=0.0, shift=0.0), "gn2_do0_rot0_sh0_seed0"),  # GN(2)
    (Config(norm="bn", gn_groups=2), "bn_g2_seed0"),
    (Config(norm="in"), "in_seed0"),
    (Config(norm="none", batch_size=8, epochs=3), "none_e3_bs8_seed0"),
    (Config(weight_decay=1e-4, val_split=10_000, compile=True), "bn_wd0.0001_val10000_compiled_seed0"),
    (Config(bn_batch=2), "bn_nb2_seed0"),                             # BN normalizing slices of 2 images
    (Config(norm="brn", batch_size=512, bn_batch=32), "brn_bs512_nb32_seed0"),
    (Config(norm="gnws"), "gnws_seed0"),
    (Config(norm="evo", l1=STUDY_L1), "evo_l1_seed0"),
])
def test_run_name_examples(config, name):
    assert run_name(config) == name


def test_run_name_ignores_where_the_data_is_and_what_it_runs_on():
    assert run_name(Config(data_dir="/elsewhere", device="cpu")) == run_name(Config()) == "bn_seed0"


def test_every_setting_that_changes_a_run_changes_its_name():
    # run_name keys the run folder and the saved weights (runner: models_dir/<run name>.pt)
    changed = {"norm": "gn", "epochs": 3, "batch_size": 128, "lr": 0.02, "optimizer": "sgd", "weight_decay": 1e-4,
               "l1": 1e-4, "gn_groups": 2, "bn_batch": 2, "dropout": 0.1, "degrees": 4.0, "shift": 1.0, "seed": 1,
               "val_split": 100, "train_subset": 100, "compile": True}
    assert set(changed) == set(IDENTITY) == set(asdict(DEFAULTS)) - {"data_dir", "device"}
    names = {key: run_name(replace(DEFAULTS, **{key: value})) for key, value in changed.items()}
    assert len(set(names.values()) | {run_name(DEFAULTS)}) == len(names) + 1, names


def test_different_l1_lambdas_get_different_names():
    lambdas = (1e-4, 1.5e-4, 2e-4, 2.5e-5, 3e-5)
    names = [run_name(Config(l1=l1)) for l1 in lambdas]
    assert len(set(names)) == len(lambdas), dict(zip(lambdas, names))


def test_every_norm_has_a_variant_with_label_and_colour():
    labels = {"gnws": "GN+WS", "evo": "EvoNorm-S0", "none": "no norm"}  # the others: the key in capitals
    for norm in NORMS:
        variant = VARIANTS[norm]
        assert variant.settings == {"norm": norm}
        assert variant.label == labels.get(norm, norm.upper()) and variant.color
    assert len({v.label for v in VARIANTS.values()}) == len({v.color for v in VARIANTS.values()}) == len(VARIANTS)


def test_every_variant_key_names_its_own_settings():
    for key, variant in VARIANTS.items():
        config = replace(DEFAULTS, **variant.settings)
        assert variant_key(config) == key and run_label(config) == variant.label


def test_variant_key_and_label():
    assert [variant_key(Config(norm=n)) for n in NORMS] == list(NORMS)
    assert variant_key(Config(norm="bn", l1=1e-4)) == "bn_l1" and run_label(Config(norm="bn", l1=1e-4)) == "BN+L1"
    assert run_label(Config(norm="gn")) == "GN"
    assert variant_key(Config(norm="gn", gn_groups=2)) == "gn2" and run_label(Config(norm="gn", gn_groups=2)) == "GN(2)"
    assert run_label(Config(norm="gn", gn_groups=1)) == "GN(1)" and run_label(Config(norm="gn", gn_groups=2, l1=1e-4)) == "GN(2)+L1"


@pytest.mark.parametrize("norm", NORMS)
def test_every_norm_with_l1_has_a_label(norm):
    # main.py --norm gn --l1 1e-4 is a valid command; fit() labels its run with run_label
    label = run_label(Config(norm=norm, l1=1e-4))
    assert label == VARIANTS[norm].label + "+L1" and label != run_label(Config(norm=norm))


def test_config_from_record_drops_unknown_keys_and_fills_new_fields():
    assert config_from_record(asdict(Config(norm="gn", seed=3))) == Config(norm="gn", seed=3)
    old = {k: v for k, v in asdict(Config(norm="ln")).items() if k not in ("optimizer", "compile")}
    assert config_from_record({**old, "colour": "red"}) == Config(norm="ln")


def test_the_same_run_wherever_it_trains():
    here = Config(norm="gn", seed=1, device="auto", data_dir="data")
    assert same_run(here, Config(norm="gn", seed=1, device="cpu", data_dir="/mnt/mnist"))
    assert same_run(asdict(here), here)  # a recorded dict and a Config


@pytest.mark.parametrize("change", [{"seed": 2}, {"compile": True}, {"l1": 1e-5}, {"lr": 0.02}, {"gn_groups": 2}])
def test_what_changes_the_numbers_makes_another_run(change):
    assert not same_run(Config(norm="gn"), Config(norm="gn", **change))


def test_an_old_record_without_newer_fields_is_the_same_run():
    old = {k: v for k, v in asdict(Config(norm="ln", seed=2)).items() if k not in ("optimizer", "compile")}
    assert same_run(old, Config(norm="ln", seed=2, device="cpu"))
    assert run_identity(old) == run_identity(Config(norm="ln", seed=2))


def test_records_written_before_bn_batch_are_plain_bn_runs_of_the_same_name():
    old = {k: v for k, v in asdict(Config(norm="bn", seed=1, batch_size=512)).items() if k != "bn_batch"}
    assert config_from_record(old) == Config(norm="bn", seed=1, batch_size=512)
    assert config_from_record(old).bn_batch == 0 and run_identity(old)["bn_batch"] == 0
    assert run_name(config_from_record(old)) == "bn_bs512_seed1"
    assert same_run(old, Config(norm="bn", seed=1, batch_size=512))
    assert not same_run(old, Config(norm="bn", seed=1, batch_size=512, bn_batch=32))  # slices: another run
