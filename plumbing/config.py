"""Every name and default in one place: the settings of a run (`Config`), the variants compared, run names.

A new normalization takes a branch in model.py's `norm_layer`, its entry in `VARIANTS` (label, colour) and its
place in `PLAIN` (the order of tables and figures) here; `NORMS`, the CLI's choices, the tables, the figures and
the tests parametrized over NORMS follow. No torch here: a command line parses its flags (and answers --help or
a bad flag) before torch is imported.
"""
import os
from dataclasses import asdict, dataclass, fields

BN_BATCH_NORMS = ("bn", "brn")  # the norms whose training batch Config.bn_batch can slice
GN_GROUPS = 4  # every width below is a multiple of 4, so 1, 2 and 4 groups all fit
WIDTHS = (8, 12, 16, 8, 12, 16, 12)  # output channels of the seven normalized convs
DATA_DIR_ENV = "MNIST_DATA_DIR"  # used when --data-dir is not given
DEVICES = ("auto", "cpu", "cuda", "mps")
TRAIN_IMAGES = 60_000  # MNIST's training split
RESULTS_DIR, IMAGES_DIR = "results", "images"  # the committed results and figures


def bench_file(device_type, job):
    """The file name in RESULTS_DIR of a bench.py job's results on a device type: bench_cpu_norms.json, ..."""
    return f"bench_{device_type}_{job}.json"


NORM_COSTS_FILE = bench_file("cpu", "norms")  # bench.py norms on a CPU: the batch-size figure's time panel


@dataclass
class Config:
    """Every setting of one run; the CLI flags, the experiments and the notebook all fill this."""
    norm: str = "bn"          # one of model.NORMS
    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.01          # peak learning rate of the one-cycle schedule
    optimizer: str = "adam"   # adam | sgd (with momentum SGD_MOMENTUM)
    weight_decay: float = 0.0  # the optimizer's L2 penalty (0 = off)
    l1: float = 0.0           # lambda of the L1 penalty on conv weights (0 = off)
    gn_groups: int = GN_GROUPS  # groups of GroupNorm for norm="gn"
    bn_batch: int = 0         # BN's normalization batch: slices of K images, each by its own statistics (0 = all)
    dropout: float = 0.05
    degrees: float = 8.0      # training augmentation: max rotation, degrees
    shift: float = 2.0        # training augmentation: max shift, pixels
    seed: int = 0
    val_split: int = 0        # training images held out for validation (0 = none)
    train_subset: int = 0     # train on the first N images only (0 = all)
    data_dir: str = "data"    # where MNIST is; not part of what a run computes, and not recorded
    device: str = "auto"      # auto | cpu | cuda | mps
    compile: bool = False     # torch.compile the model (the first epoch compiles; see BENCHMARKS.md)


DEFAULTS = Config()
OPTIMIZERS = ("adam", "sgd")
SGD_MOMENTUM = 0.9  # as built; the one-cycle schedule then cycles it 0.95 -> 0.85 -> 0.95 against the LR
STUDY_L1 = 1e-5  # the L1 lambda of the study's BN+L1 variant (chosen on validation, see README)
# the training batch sizes the experiments compare (the batch-size sweep, bench.py norms)
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256, 512)
# the short recipe of the experiments (the batch-size sweep, the LR range): 3 epochs, i.e. 180,000 images
EXPERIMENT_SEEDS, EXPERIMENT_EPOCHS = (0, 1, 2), 3


@dataclass(frozen=True)
class Engine:
    """How runs are trained: handed to runner.run_configs by every multi-run command and the notebook."""
    out: str = "runs"                # folder for the run folders
    workers: int = 1                 # runs at a time on this machine's CPUs (see runner.placement)
    address: str | None = None       # a Ray cluster to train on (the only use of Ray)
    gpus_per_run: float | None = None  # on the cluster: share of a GPU per run (unset: runner's default)


@dataclass(frozen=True)
class Variant:
    label: str          # on figures and in tables
    color: str          # matplotlib colour, the same in every figure
    settings: dict      # what differs from the shared recipe


# variant key -> Variant. A plain norm's key is the norm itself; "_l1" marks the L1 penalty.
VARIANTS = {
    "gn": Variant("GN", "tab:blue", {"norm": "gn"}),
    "ln": Variant("LN", "tab:orange", {"norm": "ln"}),
    "bn_l1": Variant("BN+L1", "tab:green", {"norm": "bn", "l1": STUDY_L1}),
    "bn": Variant("BN", "tab:red", {"norm": "bn"}),
    "gn2": Variant("GN(2)", "tab:purple", {"norm": "gn", "gn_groups": 2}),  # the GN family: 1 (LN), 2, 4 (GN), C (IN)
    "in": Variant("IN", "tab:brown", {"norm": "in"}),
    "none": Variant("no norm", "tab:gray", {"norm": "none"}),
    "gnws": Variant("GN+WS", "navy", {"norm": "gnws"}),  # GN(4) after weight-standardized convs: GN's dark blue
    "brn": Variant("BRN", "tab:pink", {"norm": "brn"}),  # Batch Renormalization: near BN's red
    "frn": Variant("FRN", "tab:olive", {"norm": "frn"}),  # Filter Response Normalization with its TLU
    "evo": Variant("EvoNorm-S0", "tab:cyan", {"norm": "evo"}),
}
# the variants without L1, in the order of every table and figure; the experiments' --norms choices
PLAIN = ("bn", "brn", "gn", "gnws", "ln", "gn2", "in", "frn", "evo", "none")
assert set(PLAIN) == {key for key in VARIANTS if not key.endswith("_l1")}
NORMS = tuple(dict.fromkeys(VARIANTS[key].settings["norm"] for key in PLAIN))  # model.norm_layer builds each
assert set(NORMS) <= set(VARIANTS), "every norm needs a VARIANTS entry of its own name (label, colour)"
STUDY_VARIANTS = ("gn", "ln", "bn_l1")  # the mission's three; "bn" (no L1) is the control of the shift study
COMPARED = ("bn", "gn", "ln")  # what the sweep and the LR range run unless --norms says otherwise
GN_FAMILY = ("ln", "gn2", "gn", "in")  # GroupNorm from 1 group (LN) to one channel per group (IN)
GN_FAMILY_ADDED = tuple(key for key in GN_FAMILY if key not in COMPARED)  # GN(2), IN: swept at fewer batch sizes


def variant_key(config):
    """The norm ('gn', 'ln', 'bn', 'in', 'none'); 'gn2' for GN with 2 groups (any count but GN_GROUPS is
    named); '_l1' appended when the run has an L1 penalty ('bn_l1')."""
    groups = str(config.gn_groups) if config.norm == "gn" and config.gn_groups != GN_GROUPS else ""
    return config.norm + groups + ("_l1" if config.l1 else "")


def run_label(config):
    """'GN', 'LN', 'BN', 'BN+L1', 'GN(2)', ...: the variant's label ('GN+L1', 'GN(3)' for one not in VARIANTS)."""
    key = variant_key(config)
    if key in VARIANTS:
        return VARIANTS[key].label
    plain = key.removesuffix("_l1")
    label = VARIANTS[plain].label if plain in VARIANTS else f"{config.norm.upper()}({config.gn_groups})"
    return label + ("+L1" if config.l1 else "")


# settings that name a run folder when they differ from DEFAULTS, and their short names
NAMED = {"epochs": "e", "batch_size": "bs", "lr": "lr", "optimizer": "", "weight_decay": "wd", "gn_groups": "g",
         "bn_batch": "nb", "dropout": "do", "degrees": "rot", "shift": "sh", "val_split": "val", "train_subset": "n",
         "compile": "compiled"}


def run_name(config):
    """The run folder's name: the variant, every setting that differs from DEFAULTS, the seed.

    'gn_seed0' for the study's GN run, 'bn_e3_bs512_seed1' for a sweep run; L1 other than the
    study's lambda is named too ('bn_l1_0.0001_seed0'). The one place run folders are named.
    """
    parts = [variant_key(config)]
    if config.l1 and config.l1 != STUDY_L1:
        parts.append(f"{config.l1:g}")
    for name, short in NAMED.items():
        if name == "gn_groups" and config.norm == "gn":
            continue  # the variant key names GN's groups: 'gn2'
        value = getattr(config, name)
        if value != getattr(DEFAULTS, name):
            parts.append(short if value is True else f"{short}{value:g}" if isinstance(value, float)
                         else f"{short}{value}")
    return "_".join(parts + [f"seed{config.seed}"])


# Config fields that say where a run trains and where its data lies, not what it computes
WHERE_NOT_WHAT = ("data_dir", "device")
IDENTITY = tuple(f.name for f in fields(Config) if f.name not in WHERE_NOT_WHAT)


def run_identity(config):
    """The settings that make two runs the same run: every Config field except WHERE_NOT_WHAT.

    `config` is a Config or a recorded config dict; fields added to Config since a record was
    written take their defaults, so old records keep matching. The one definition of "the same
    run": results files (runner.find_run), run-folder reuse and --resume's flag check use it, and
    run_name names every field of it.
    """
    values = {**asdict(DEFAULTS), **(config if isinstance(config, dict) else asdict(config))}
    return {name: values[name] for name in IDENTITY}


def same_run(a, b):
    """Whether two configs (Config or recorded dicts) are the same run, wherever each trained."""
    return run_identity(a) == run_identity(b)


def config_from_record(record):
    """The Config of a recorded run's config dict; fields added since it was written take their defaults."""
    known = {f.name for f in fields(Config)}
    return Config(**{k: v for k, v in record.items() if k in known})


def default_data_dir():
    """$MNIST_DATA_DIR if set, else ./data."""
    return os.environ.get(DATA_DIR_ENV, "data")
