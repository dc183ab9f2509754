"""bench.py norms: what each norm costs, then BN folded away at inference.

First every norm that trains, BN, BRN, GN, GN+WS, LN, FRN and EvoNorm-S0 (IN, GroupNorm with a channel per
group, and no norm at all are left out), at every batch size the experiments compare (config.BATCH_SIZES): a
training step and an inference pass on one fixed batch, the norms taking turns (results/bench_<device>_norms.json).
Then inference of BN, BN folded into its convs (torch's fuse_conv_bn_eval), GN and LN at batch 1, 64 and 1000,
side by side (results/bench_<device>_inference.json).
"""
import math
import statistics

import torch
import torch.nn.functional as F

from lab.bench.timing import device_of, keep_memory, net, round_robin, save_results, timed
from lab.bn_stats import folded
from model import Net
from plumbing.config import BATCH_SIZES, COMPARED, NORMS, TRAIN_IMAGES, bench_file

TIMED = tuple(n for n in NORMS if n not in ("in", "none"))  # the seven of the docstring, in NORMS order
INFERENCE_BATCH_SIZES = (1, 64, 1000)


def step_and_inference_times(model, optimizer, x, y, steps, device):
    """(seconds per training step, seconds per inference batch) of `model` on one fixed batch."""
    train_times, infer_times = [], []
    model.train()
    with timed(device, train_times):
        for _ in range(steps):
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad(), timed(device, infer_times):
        for _ in range(steps):
            model(x)
    return train_times[0] / steps, infer_times[0] / steps


def norm_costs(device, norms, batch_sizes, rounds, images_per_block):
    """{norm: {batch: {'train_step_s': [...], 'inference_batch_s': [...]}}}, the norms taking turns.

    Each round times every (batch size, norm) pair on a fixed batch (the bare model step, no data
    pipeline); within a batch size the norms' order rotates from round to round.
    """
    steps = {b: max(2, images_per_block // b) for b in batch_sizes}
    torch.manual_seed(0)
    models = {n: net(n, (rounds + 1) * sum(steps.values()), device) for n in norms}
    optimizers = {n: torch.optim.Adam(m.parameters(), lr=1e-3) for n, m in models.items()}
    times = {n: {b: {"train_step_s": [], "inference_batch_s": []} for b in batch_sizes} for n in norms}
    for round_, order in round_robin(norms, rounds + 1):  # round 0 warms every pair up and is not kept
        for b in batch_sizes:
            x, y = torch.randn(b, 1, 28, 28, device=device), torch.randint(0, 10, (b,), device=device)
            for n in order:
                train_s, infer_s = step_and_inference_times(models[n], optimizers[n], x, y, steps[b], device)
                if round_:
                    times[n][b]["train_step_s"].append(train_s)
                    times[n][b]["inference_batch_s"].append(infer_s)
    return times


def summarize_norm_costs(times):
    """Medians over rounds: seconds per 60k-image training epoch, and inference images/s."""
    return {n: {str(b): {"train_epoch_s": statistics.median(t["train_step_s"]) * math.ceil(TRAIN_IMAGES / b),
                         "inference_images_per_s": b / statistics.median(t["inference_batch_s"]), **t}
                for b, t in by_batch.items()} for n, by_batch in times.items()}


def costs(args, device):
    """Every norm at every batch size, side by side; writes results/bench_<device>_norms.json."""
    times = norm_costs(device, list(TIMED), list(BATCH_SIZES), args.rounds, args.cost_images)
    results = summarize_norm_costs(times)
    _, out = save_results(args, device, bench_file(device.type, "norms"), {"results": results})
    for title, key, spec in (("train s/epoch", "train_epoch_s", ".1f"),
                             ("inference img/s", "inference_images_per_s", ",.0f")):
        print(f"{title:>16} " + " ".join(f"{n.upper():>10}" for n in TIMED))
        for b in BATCH_SIZES:
            print(f"{'batch ' + str(b):>16} " + " ".join(f"{results[n][str(b)][key]:>10{spec}}" for n in TIMED))
    print(f"wrote {out}")


def inference_models(device):
    """{name: model in eval mode}: BN, the same BN model folded, GN and LN, all with settled statistics."""
    torch.manual_seed(0)
    models = {n: Net(n).to(device) for n in COMPARED}
    with torch.no_grad():  # a few training-mode passes so BN's running statistics are not the initial 0 and 1
        for _ in range(3):
            models["bn"].train()(torch.randn(256, 1, 28, 28, device=device))
    models = {n: m.eval() for n, m in models.items()}
    return {"bn": models["bn"], "bn_folded": folded(models["bn"]), **{n: m for n, m in models.items() if n != "bn"}}


def inference_times(device, rounds, images_per_block):
    """{model: {batch: [seconds per batch, one per round]}} with the models taking turns, round 0 dropped."""
    models = inference_models(device)
    times = {n: {b: [] for b in INFERENCE_BATCH_SIZES} for n in models}
    with torch.no_grad():
        for round_, order in round_robin(models, rounds + 1):
            for b in INFERENCE_BATCH_SIZES:
                x, steps = torch.randn(b, 1, 28, 28, device=device), max(2, images_per_block // b)
                for n in order:
                    block = []
                    with timed(device, block):
                        for _ in range(steps):
                            models[n](x)
                    if round_:
                        times[n][b].append(block[0] / steps)
    return times, models


def inference(args, device):
    """BN, BN folded, GN and LN side by side; writes results/bench_<device>_inference.json."""
    times, models = inference_times(device, args.inference_rounds, args.inference_images)
    x = torch.randn(1000, 1, 28, 28, device=device)
    with torch.no_grad():
        gap = (models["bn"](x) - models["bn_folded"](x)).abs().max().item()
    results = {n: {str(b): {"images_per_s": b / statistics.median(t), "batch_s": t} for b, t in by_batch.items()}
               for n, by_batch in times.items()}
    _, out = save_results(args, device, bench_file(device.type, "inference"),
                          {"folded_max_abs_logit_difference": gap, "results": results})
    print(f"{'batch':>6} " + " ".join(f"{n + ' img/s':>16}" for n in results))
    for b in INFERENCE_BATCH_SIZES:
        print(f"{b:>6} " + " ".join(f"{results[n][str(b)]['images_per_s']:>16,.0f}" for n in results))
    print(f"folded BN: max |logit difference| {gap:.2e} over 1,000 random inputs; wrote {out}")


def run(args):
    """bench.py norms: the norms' costs at every batch size, then inference with BN folded."""
    device = device_of(args)
    keep_memory(args.malloc, device)  # process-wide: once covers both parts
    costs(args, device)
    inference(args, device)
