#!/usr/bin/env python
"""Same-machine timing of one meta-training iteration: ORIGINAL SAVFI code vs savfi.

Original: github myungsub/meta-interpolation (CVPR 2020), exported from a git clone of it
(env ORIGINAL_GIT) into a temporary folder by this script and patched minimally (see ``patch_original``) to run on today's torch, on
CPU (or CUDA with --device cuda). Reproduction: ``savfi_core`` (MetaLearner.meta_step).

Both sides: paper-size network, random init, batch 2 (two septuplet tasks), 128x128 crops of
real Vimeo septuplets, plain MAML, 1 inner step, inner rule Adam (lr 1e-5, betas .9/.99),
outer Adam (lr 1e-5, betas .9/.99), first order unless --second-order, no multi-step loss.
The same crops feed both sides (savfi's loader; the original gets a list of 7 [B,3,H,W]
tensors, normalised as its own Vimeo loader does: [0,1] for CAIN/RRIN, (255x-127.5)/127.5
for DVF), straight into ``SceneAdaptiveInterpolation.run_train_iter``.

Usage:
  python benchmarks/original_vs_savfi.py --driver [--models cain,voxelflow] [--rounds 2] [--out JSON] [--markdown MD]
      runs worker processes orig, savfi, orig, savfi, ... per model, writes the JSON and,
      with --markdown, a table (median, min-max of the round medians, ratio, peak memory).
  python benchmarks/original_vs_savfi.py --driver --savfi-only --only-second-order ...
      savfi alone (the original has no working second order: its Adam inner step
      differentiates sqrt at zero and its weights turn NaN from the second outer step).
  python benchmarks/original_vs_savfi.py --side orig|savfi --model cain|voxelflow|rrin
      one worker; prints one JSON line of per-iteration times and its peak resident memory.
Run it from a savfi checkout with its venv python (.venv/bin/python). Environment:
  ORIGINAL_GIT  a git clone (bare or not) of myungsub/meta-interpolation (required for --side orig)
  SAVFI_ROOT    the savfi checkout (default: the current folder)
  SAVFI_DATA    a Vimeo-90K septuplet folder (default: SAVFI_ROOT/../shared/data/vimeo_septuplet)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tarfile
import io
import time
import types

import tempfile

MIRROR = os.environ.get("ORIGINAL_GIT", "")
SAVFI = os.path.abspath(os.environ.get("SAVFI_ROOT", os.getcwd()))
DATA = os.environ.get("SAVFI_DATA", os.path.join(SAVFI, "..", "shared", "data", "vimeo_septuplet"))
ORIG_DIR = os.path.join(tempfile.gettempdir(), "original_savfi_harness")
SAVFI_NAME = {"cain": "cain", "voxelflow": "dvf", "rrin": "rrin"}
LOSS = {"cain": "1*L1", "voxelflow": "1*MSE", "rrin": "1*L1"}  # as scripts/run_*.sh


# ------------------------------------------------------------------------------------------
# Export and patch the original
# ------------------------------------------------------------------------------------------
def export_original(dest: str = ORIG_DIR) -> str:
    marker = os.path.join(dest, ".patched")
    if os.path.exists(marker):
        return dest
    os.makedirs(dest, exist_ok=True)
    names = subprocess.run(["git", "-C", MIRROR, "ls-tree", "-r", "--name-only", "HEAD"],
                           check=True, capture_output=True, text=True).stdout.split("\n")
    # Some image blobs are missing from the mirror: export only the code.
    names = [n for n in names if n and not n.lower().endswith((".png", ".jpg", ".gif", ".pdf", ".pth"))]
    blob = subprocess.run(["git", "-C", MIRROR, "archive", "HEAD", *names], check=True, capture_output=True).stdout
    tarfile.open(fileobj=io.BytesIO(blob)).extractall(dest)
    patch_original(dest)
    open(marker, "w").write("ok\n")
    return dest


def _sub(path: str, old: str, new: str, count_expected: int | None = None) -> None:
    text = open(path).read()
    n = text.count(old)
    if n == 0 or (count_expected is not None and n != count_expected):
        raise RuntimeError(f"patch of {path}: found {n} x {old!r}")
    open(path, "w").write(text.replace(old, new))


def patch_original(root: str) -> None:
    """Device-only patches (no numerical change): hard-coded .cuda() in warping grids."""
    vf = os.path.join(root, "voxelflow/core/models/voxel_flow.py")
    _sub(vf, "with torch.cuda.device(input.get_device()):", "if True:  # [harness] was torch.cuda.device(...)")
    _sub(vf, ".cuda()", ".to(input.device)")
    rr = os.path.join(root, "rrin/model.py")
    _sub(rr, "torch.tensor(gridX, requires_grad=False).cuda()", "torch.tensor(gridX, requires_grad=False).to(flow.device)")
    _sub(rr, "torch.tensor(gridY, requires_grad=False).cuda()", "torch.tensor(gridY, requires_grad=False).to(flow.device)")


def install_stubs() -> None:
    """torchvision (not installable beside torch 2.13 here) and cv2 are only used by data
    loaders, the VGG/SuperSloMo losses and superslomo's de-normalisation: stub them."""
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    models = types.ModuleType("torchvision.models")

    class Normalize:  # torchvision.transforms.Normalize, functional enough for [C,H,W]
        def __init__(self, mean, std):
            self.mean, self.std = mean, std

        def __call__(self, x):
            import torch
            m = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            s = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
            return (x - m) / s

    tr.Normalize = Normalize
    tr.Compose = lambda ts: (lambda x: [x := t(x) for t in ts][-1])
    tv.transforms, tv.models = tr, models
    sys.modules.update({"torchvision": tv, "torchvision.transforms": tr, "torchvision.models": models})
    sys.modules.setdefault("cv2", types.ModuleType("cv2"))


def patch_torch_api() -> None:
    """ReduceLROnPlateau lost its ``verbose`` argument in recent torch: drop it."""
    import torch.optim.lr_scheduler as sched

    base = sched.ReduceLROnPlateau
    if getattr(base, "_harness", False):
        return

    class ReduceLROnPlateau(base):
        _harness = True

        def __init__(self, *a, verbose=None, **k):
            super().__init__(*a, **k)

    sched.ReduceLROnPlateau = ReduceLROnPlateau


# ------------------------------------------------------------------------------------------
# Data (identical crops for both sides)
# ------------------------------------------------------------------------------------------
def load_batches(batch_size: int, crop: int, count: int):
    sys.path.insert(0, SAVFI)
    from savfi_core.data import open_dataset
    from savfi_core.data.core import collate_samples

    ds = open_dataset("vimeo_septuplet", root=DATA, split="train", crop_size=crop, seed=0)
    samples = [ds[i] for i in range(min(count, len(ds)))]
    return [collate_samples(samples[i:i + batch_size]) for i in range(0, len(samples) - batch_size + 1, batch_size)]


# ------------------------------------------------------------------------------------------
# Workers
# ------------------------------------------------------------------------------------------
def init_path(a) -> str:
    return os.path.join(a.orig_dir, f"init_{a.model}.pth")


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch
        torch.cuda.synchronize()


def worker_orig(a) -> dict:
    import torch
    root = export_original(a.orig_dir)
    install_stubs()
    patch_torch_api()
    sys.path.insert(0, root)
    cwd = os.getcwd()
    os.chdir(root)
    import config
    import utils
    utils.load_checkpoint = lambda *x, **k: None  # resume=True only to skip pretrained .pth loads
    argv = ["--model", a.model, "--batch_size", str(a.batch_size), "--loss", LOSS[a.model],
            "--optimizer", "Adam", "--inner_lr", "1e-5", "--outer_lr", "1e-5",
            "--number_of_training_steps_per_iter", "1", "--num_gpu", "0" if a.device == "cpu" else "1"]
    if a.second_order:
        argv.append("--second_order")
    args, _ = config.parser.parse_known_args(argv)
    args.cuda = a.device != "cpu"
    args.resume = True  # random init: the model constructors load pretrained_models/*.pth otherwise
    from meta_learning_system import SceneAdaptiveInterpolation
    torch.manual_seed(0)
    system = SceneAdaptiveInterpolation(args)
    os.chdir(cwd)
    # Share the original's random init with the savfi worker (same weights -> same losses).
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in system.net.state_dict().items()}}, init_path(a))
    batches = load_batches(a.batch_size, a.crop, a.num_samples)

    def to_orig(batch):
        frames = batch.frames  # [B,7,3,H,W] in [0,1]
        out = [frames[:, i].contiguous() for i in range(frames.shape[1])]
        if a.model == "voxelflow":
            out = [(f * 255.0 - 127.5) / 127.5 for f in out]
        return [f.to(a.device) for f in out]

    data = [to_orig(b) for b in batches]
    times, losses = [], []
    for it in range(a.warmup + a.iters):
        batch = data[it % len(data)]
        sync(a.device)
        t0 = time.perf_counter()
        out, _, _ = system.run_train_iter(data_batch=batch, epoch=0)
        loss = float(out["loss"])
        sync(a.device)
        dt = time.perf_counter() - t0
        if it >= a.warmup:
            times.append(dt)
        losses.append(loss)
    nparams = sum(p.numel() for p in system.net.parameters())
    profiled = profile_convolution(lambda: system.run_train_iter(data_batch=data[0], epoch=0)) if a.profile else {}
    return {"times_s": times, "losses": losses, "net_params": nparams, "peak_rss_mib": peak_rss_mib(), **profiled}


def worker_savfi(a) -> dict:
    import torch
    sys.path.insert(0, SAVFI)
    from savfi_core.backbones import create_model
    from savfi_core.meta import MetaLearner
    torch.manual_seed(0)
    weights = init_path(a) if os.path.exists(init_path(a)) else None  # the original's init, if saved
    model = create_model(SAVFI_NAME[a.model], size="paper", weights=weights).to(a.device)
    # temporal_flip=False: the original flips in its data loader (outside the timed step); here
    # both sides get the identical, unflipped batch, so their losses can be compared directly.
    learner = MetaLearner(model, algorithm="maml", inner_steps=1, inner_lr=1e-5, inner_rule="adam",
                          first_order=not a.second_order, outer_lr=1e-5, outer_optimizer="adam",
                          temporal_flip=False)
    if a.savfi_skip_after:
        # Diagnostic from before meta_step computed "support_loss_after" only on request: skips
        # any no-grad support pass (today meta_step runs none by default, so this changes nothing).
        inner = learner._support_loss
        learner._support_loss = lambda *x, **k: inner(*x, **k) if torch.is_grad_enabled() else torch.zeros(())
    batches = load_batches(a.batch_size, a.crop, a.num_samples)
    batches = [type(b)(frames=b.frames.to(a.device), valid=b.valid, target_index=b.target_index, name=b.name) for b in batches]
    times, losses = [], []
    for it in range(a.warmup + a.iters):
        batch = batches[it % len(batches)]
        sync(a.device)
        t0 = time.perf_counter()
        m = learner.meta_step(batch)
        sync(a.device)
        dt = time.perf_counter() - t0
        if it >= a.warmup:
            times.append(dt)
        losses.append(m["outer_loss"])
    profiled = profile_convolution(lambda: learner.meta_step(batches[0])) if a.profile else {}
    return {"times_s": times, "losses": losses, "net_params": sum(p.numel() for p in model.parameters()),
            "init": "original's random init" if weights else "savfi random init", "peak_rss_mib": peak_rss_mib(), **profiled}


def profile_convolution(step) -> dict:
    """One more iteration under torch.profiler: milliseconds of CPU time in convolution ops
    (forward and backward, as aten reports them) and in all ops. Both sides call the same
    oneDNN convolutions, so ``orig total / savfi convolution`` bounds what removing every
    other cost on savfi's side could reach."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    convolution = sum(e.self_cpu_time_total for e in events if "convolution" in e.key) / 1000.0
    total = sum(e.self_cpu_time_total for e in events) / 1000.0
    return {"profiled_convolution_ms": round(convolution, 1), "profiled_aten_ms": round(total, 1)}


def peak_rss_mib() -> float:
    """Peak resident memory of this worker process (model, data, the steps' autograd graphs)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def run_worker(a) -> None:
    import torch
    torch.set_num_threads(a.threads)
    fn = worker_orig if a.side == "orig" else worker_savfi
    res = fn(a)
    res.update(side=a.side, model=a.model, second_order=a.second_order, threads=torch.get_num_threads(),
               savfi_skip_after=bool(a.savfi_skip_after and a.side == "savfi"))
    print("RESULT " + json.dumps(res), flush=True)


# ------------------------------------------------------------------------------------------
# Driver: A B A B
# ------------------------------------------------------------------------------------------
def cpu_description() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} logical CPUs visible)"
    except OSError:
        pass
    return platform.processor()


def driver(a) -> None:
    import torch
    export_original(a.orig_dir)
    models = a.models.split(",")
    orders = [True] if a.only_second_order else [False] + ([True] if a.with_second_order else [])
    # --resume-out: keep the result entries (other models/orders) already in --out.
    a.previous = json.load(open(a.out)).get("results", {}) if (a.resume_out and os.path.exists(a.out)) else {}
    runs = []
    a.load_before = os.getloadavg()
    for model in models:
        for so in orders:
            for rnd in range(a.rounds):
                for side in ("savfi",) if a.savfi_only else ("orig", "savfi"):
                    cmd = [sys.executable, os.path.abspath(__file__), "--side", side, "--model", model,
                           "--iters", str(a.iters), "--warmup", str(a.warmup), "--threads", str(a.threads),
                           "--device", a.device, "--batch-size", str(a.batch_size), "--crop", str(a.crop),
                           "--num-samples", str(a.num_samples), "--orig-dir", a.orig_dir]
                    if so:
                        cmd.append("--second-order")
                    if a.profile:
                        cmd.append("--profile")
                    if a.savfi_skip_after and side == "savfi":
                        cmd.append("--savfi-skip-after")
                    t0 = time.time()
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
                    if p.returncode != 0 or not line:
                        print(p.stdout[-3000:], p.stderr[-3000:], file=sys.stderr)
                        raise SystemExit(f"worker failed: {' '.join(cmd)}")
                    r = json.loads(line[0][7:])
                    r["round"] = rnd
                    r["wall_s"] = time.time() - t0
                    runs.append(r)
                    print(f"{model:9s} so={so} round={rnd} {side:5s} median {1000*statistics.median(r['times_s']):8.1f} ms"
                          f"  losses {[round(x, 4) for x in r['losses']]}", flush=True)
                    write(a, runs, torch)
    write(a, runs, torch)


def write(a, runs, torch) -> None:
    table = {}
    for r in runs:
        key = f"{r['model']}{'-second_order' if r['second_order'] else '-first_order'}"
        if a.savfi_skip_after:
            key += "-diagnostic_savfi_without_support_loss_after"
        e = table.setdefault(key, {"orig_times_s": [], "savfi_times_s": [], "orig_round_medians_ms": [],
                                   "savfi_round_medians_ms": [], "orig_losses": [], "savfi_losses": []})
        e[f"{r['side']}_times_s"] += r["times_s"]
        e[f"{r['side']}_round_medians_ms"].append(round(1000 * statistics.median(r["times_s"]), 1))
        e[f"{r['side']}_losses"].append([round(x, 5) for x in r["losses"]])
        e[f"{r['side']}_net_params"] = r["net_params"]
        e.setdefault(f"{r['side']}_peak_rss_mib", []).append(r.get("peak_rss_mib"))
        if "profiled_convolution_ms" in r:
            e.setdefault(f"{r['side']}_profiled_convolution_ms", []).append(r["profiled_convolution_ms"])
            e.setdefault(f"{r['side']}_profiled_aten_ms", []).append(r["profiled_aten_ms"])
    for e in table.values():
        e["nonfinite_losses"] = {side: any(x != x for run in e[f"{side}_losses"] for x in run) for side in ("orig", "savfi")}
        for side in ("orig", "savfi"):
            if e[f"{side}_times_s"]:
                e[f"{side}_ms_per_iter"] = round(1000 * statistics.median(e[f"{side}_times_s"]), 1)
        if e["orig_times_s"] and e["savfi_times_s"]:
            o = 1000 * statistics.median(e["orig_times_s"])
            s = 1000 * statistics.median(e["savfi_times_s"])
            e.update(orig_ms_per_iter=round(o, 1), savfi_ms_per_iter=round(s, 1), ratio_orig_over_savfi=round(o / s, 3))
    table = {**getattr(a, "previous", {}), **table}
    out = {
        "what": "ms per meta-training iteration (outer step), original SAVFI code vs savfi, same machine",
        "device": a.device, "cpu": cpu_description(), "torch": torch.__version__, "python": platform.python_version(),
        "settings": {"batch_size": a.batch_size, "crop": a.crop, "data": DATA + " (train split, first "
                     f"{a.num_samples} septuplets, savfi loader crops, seed 0)", "size": "paper", "init": "random",
                     "algorithm": "MAML (original: LSLR rule, non-learnable rates)", "inner_steps": 1,
                     "inner_rule": "adam (betas .9/.99, eps 1e-8)", "inner_lr": 1e-5, "outer": "adam lr 1e-5 betas .9/.99",
                     "threads": a.threads, "warmup": a.warmup,
                     "savfi_call": "MetaLearner(model, algorithm='maml', inner_steps=1, inner_lr=1e-5, inner_rule='adam', "
                                   "first_order=not second_order, outer_lr=1e-5, outer_optimizer='adam', temporal_flip=False).meta_step(batch)",
                     "original_call": "SceneAdaptiveInterpolation(args).run_train_iter(list of 7 [B,3,H,W], epoch=0), args from config.py defaults + --model --loss --batch_size 2 [--second_order]",
                     "weights": "original's random init (xavier for its Meta conv layers), saved by the orig worker and loaded into savfi", "timed_iters_per_round": a.iters, "rounds": a.rounds,
                     "order": "per model: orig, savfi, orig, savfi ... each a fresh process",
                     "loss": LOSS, "statistic": "median over all timed iterations of all rounds"},
        "original_patches": [
            "export code only (mirror lacks some image blobs); pretrained .pth loads skipped via args.resume=True + utils.load_checkpoint no-op",
            "voxelflow/core/models/voxel_flow.py: torch.cuda.device(...) block -> if True, .cuda() -> .to(input.device)",
            "rrin/model.py warp(): .cuda() -> .to(flow.device)",
            "sys.modules stubs for torchvision (+transforms.Normalize) and cv2 (data loading / unused losses only)",
            "torch.optim.lr_scheduler.ReduceLROnPlateau: drop removed verbose= argument",
        ],
        "load_average_1_5_15": {"before": [round(x, 2) for x in getattr(a, "load_before", ())],
                                "after": [round(x, 2) for x in os.getloadavg()]},
        "results": table,
    }
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    json.dump(out, open(a.out, "w"), indent=1)
    if a.markdown:
        with open(a.markdown, "w") as handle:
            handle.write(markdown_table(out))


def markdown_table(out: dict) -> str:
    """The JSON's results as a markdown table: medians over all timed iterations, the spread of
    the per-round medians (min-max), the ratio, and each side's peak resident memory."""
    def spread(values):
        return f"{min(values):,.0f}-{max(values):,.0f}" if values else "-"

    def ms(value):
        return f"{value:,.0f}" if value is not None else "-"

    lines = ["| backbone | order | original (ms) | original rounds (ms) | savfi (ms) | savfi rounds (ms) "
             "| original / savfi | original peak RSS (MiB) | savfi peak RSS (MiB) | finite losses (orig / savfi) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key, e in out["results"].items():
        model, order = key.split("-", 1)
        ratio = e.get("ratio_orig_over_savfi")
        rss = {side: max([x for x in e.get(f"{side}_peak_rss_mib", []) if x is not None], default=None) for side in ("orig", "savfi")}
        rss_text = {side: "-" if value is None else f"{value:,.0f}" for side, value in rss.items()}
        finite = " / ".join("-" if not e[f"{side}_losses"] else ("no" if e["nonfinite_losses"][side] else "yes") for side in ("orig", "savfi"))
        ratio_text = "-" if ratio is None else f"{ratio:.2f}"
        lines.append(
            f"| {model} | {order.split('-')[0].replace('_', ' ')} | {ms(e.get('orig_ms_per_iter'))} | {spread(e['orig_round_medians_ms'])} "
            f"| {ms(e.get('savfi_ms_per_iter'))} | {spread(e['savfi_round_medians_ms'])} | {ratio_text} "
            f"| {rss_text['orig']} | {rss_text['savfi']} | {finite} |"
        )
    profiled = {key: e for key, e in out["results"].items() if e.get("orig_profiled_convolution_ms") or e.get("savfi_profiled_convolution_ms")}
    if profiled:
        lines += ["", "One profiled iteration per worker (torch.profiler, self CPU time of aten ops; medians over the rounds):", "",
                  "| backbone | order | original: convolution / all aten (ms) | savfi: convolution / all aten (ms) "
                  "| savfi convolution share | original time / savfi convolution time |",
                  "|---|---|---:|---:|---:|---:|"]
        for key, e in profiled.items():
            model, order = key.split("-", 1)
            median = {name: statistics.median(e[name]) if e.get(name) else None for name in (
                "orig_profiled_convolution_ms", "orig_profiled_aten_ms", "savfi_profiled_convolution_ms", "savfi_profiled_aten_ms")}
            share = "-" if not median["savfi_profiled_aten_ms"] else f"{median['savfi_profiled_convolution_ms'] / median['savfi_profiled_aten_ms']:.0%}"
            bound = ("-" if not (e.get("orig_ms_per_iter") and median["savfi_profiled_convolution_ms"])
                     else f"{e['orig_ms_per_iter'] / median['savfi_profiled_convolution_ms']:.2f}")
            lines.append(f"| {model} | {order.split('-')[0].replace('_', ' ')} | {ms(median['orig_profiled_convolution_ms'])} / {ms(median['orig_profiled_aten_ms'])} "
                         f"| {ms(median['savfi_profiled_convolution_ms'])} / {ms(median['savfi_profiled_aten_ms'])} | {share} | {bound} |")
    load = out.get("load_average_1_5_15", {})
    return "\n".join(lines) + f"\n\nLoad average (1, 5, 15 min) before / after: {load.get('before')} / {load.get('after')}\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--driver", action="store_true")
    p.add_argument("--side", choices=["orig", "savfi"])
    p.add_argument("--model", default="cain", choices=list(SAVFI_NAME))
    p.add_argument("--models", default="cain,voxelflow")
    p.add_argument("--with-second-order", action="store_true", help="driver: also time second order")
    p.add_argument("--only-second-order", action="store_true", help="driver: time second order only")
    p.add_argument("--second-order", action="store_true")
    p.add_argument("--savfi-skip-after", action="store_true", help="worker diagnostic, see worker_savfi")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--num-samples", type=int, default=8)
    p.add_argument("--orig-dir", default=ORIG_DIR)
    p.add_argument("--out", default="original-vs-savfi.json")
    p.add_argument("--resume-out", action="store_true")
    p.add_argument("--savfi-only", action="store_true", help="driver: run savfi workers only (e.g. second order)")
    p.add_argument("--markdown", default="", help="driver: also write the table as markdown here")
    p.add_argument("--profile", action="store_true",
                   help="each worker profiles one extra iteration (not timed): convolution vs all aten CPU time")
    a = p.parse_args()
    if a.driver:
        driver(a)
    else:
        run_worker(a)


if __name__ == "__main__":
    main()
