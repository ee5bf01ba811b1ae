"""Training throughput (images/s) and memory: ddpm_edu's 'default' U-Net vs diffusers' UNet2DModel.

One training step = L_simple on a batch (q_sample, forward, MSE) + backward + AdamW step, identical code for every
model (ddpm_edu.diffusion.diffusion_loss), the same batches (bundled MNIST subset, fixed generator), the same
precision (fp32, or bf16 autocast). Both models are class-conditional (10 digits + a "no class" label;
diffusers: num_class_embeds=11). Models are timed interleaved (A, B, A, B, ...) and the ratio of medians printed.

Memory, two measures:
- activations saved for backward (MB per batch): bytes of the distinct tensors autograd keeps, counted with
  torch.autograd.graph.saved_tensors_hooks — deterministic, the same on any machine;
- peak memory of training steps above the steady state, in a fresh subprocess per model and precision, after one
  warm-up step: CPU, glibc's malloc_trim(0), then the peak resident set (VmHWM, reset through /proc/self/clear_refs) minus the RSS before the
  timed steps; CUDA, torch.cuda.max_memory_allocated minus the memory allocated before them.

FLOPs per image come from torch.utils.flop_counter.FlopCounterMode (forward + backward, fp32); achieved FLOP/s =
FLOPs per image x images/s.

    python benchmarks/bench_train_throughput.py                      # CPU, fp32 and bf16, ~3-5 minutes
    python benchmarks/bench_train_throughput.py --device cuda --batch-size 128 --steps 20
    python benchmarks/bench_train_throughput.py --device cuda --precisions bf16 --channels-last --compile default
"""
import _bench_common as common  # first: sets OMP_WAIT_POLICY before torch loads

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpm_edu.data import load_dataset
from ddpm_edu.diffusion import diffusion_loss
from ddpm_edu.schedules import make_schedule

SCRIPT = "bench_train_throughput"


def make_batches(n_batches: int, batch_size: int, device, seed: int = 0):
    """(x0, t, noise, labels) batches from the bundled MNIST subset, the same for every model."""
    data = load_dataset("mnist-subset", "train")
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(n_batches):
        idx = torch.randint(0, len(data), (batch_size,), generator=g)
        x0 = data.images[idx]
        t = torch.randint(0, 1000, (batch_size,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        batches.append([v.to(device) for v in (x0, t, noise, data.labels[idx])])
    return batches


def make_step(model, schedule, device, precision: str, channels_last: bool):
    """A closure running one training step (common.make_train_step) on the batch (x0, t, noise, labels) given."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    train_step = common.make_train_step(model, schedule, device, precision, memory_format=fmt)
    return lambda batch: train_step(*batch)


def saved_activation_mb(model, schedule, batch, device, precision: str) -> float:
    """MB of the distinct tensors autograd saves for backward during one forward pass of the loss."""
    seen, total = set(), 0

    def pack(tensor):
        nonlocal total
        key = (tensor.untyped_storage().data_ptr(), tensor.dtype)
        if key not in seen:
            seen.add(key)
            total += tensor.untyped_storage().nbytes()
        return tensor

    x0, t, noise, labels = batch
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), common.autocast(device, precision):
        loss = diffusion_loss(model, schedule, x0, t, noise, labels)
    del loss
    return total / 2**20


def flops_per_image(model, schedule, device) -> dict:
    """Forward and forward+backward FLOPs per 28x28 image (fp32, batch of 8, flop_counter's conventions)."""
    batch = make_batches(1, 8, device, seed=1)[0]
    x0, t, noise, labels = batch
    with FlopCounterMode(display=False) as forward_counter, torch.no_grad():
        model(x0, t, labels)
    with FlopCounterMode(display=False) as train_counter:
        diffusion_loss(model, schedule, x0, t, noise, labels).backward()
    model.zero_grad(set_to_none=True)
    return {"forward": forward_counter.get_total_flops() / 8, "train_step": train_counter.get_total_flops() / 8}


def proc_status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS: resident now, VmHWM: peak resident), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(args) -> None:
    """Run in a fresh process: peak memory of a few training steps of one model at one precision."""
    device = common.setup(args)
    name, precision = args.memory_child.split(":")
    models = common.make_models(argparse_namespace(args, baselines=name if name != "ours" else ""), device)
    model = models[name]
    schedule = make_schedule("linear", T=1000)
    batches = make_batches(3, args.batch_size, device)
    step = make_step(model, schedule, device, precision, args.channels_last)
    step(batches[0])  # warm-up: optimizer state, lazily loaded kernels and code pages are now resident
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        ctypes.CDLL(None).malloc_trim(0)  # glibc: hand the freed heap of the warm-up step back to the OS
        before = proc_status_mb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: reset the peak RSS (VmHWM) to the current RSS
    for batch in batches:
        step(batch)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak = proc_status_mb("VmHWM") - before
    print(json.dumps({"peak_mb": peak}))


def argparse_namespace(args, **changes):
    ns = type(args)(**vars(args))
    for key, value in changes.items():
        setattr(ns, key, value)
    return ns


def peak_memory_mb(args, name: str, precision: str) -> float:
    argv = [sys.executable, __file__, "--memory-child", f"{name}:{precision}", "--device", args.device,
            "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    if args.channels_last:
        argv.append("--channels-last")
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def main() -> None:
    parser = common.common_args(__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per model before timing")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-child", default=None, help=argparse_help_hidden())
    parser.add_argument("--report", default=None, help="only print the tables of an earlier result JSON")
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args)
    if args.report:
        return report(common.load_saved(args), args)

    device = common.setup(args)
    schedule = make_schedule("linear", T=1000)
    models = common.make_models(args, device)
    params = common.parameter_counts(models)
    flops = {name: flops_per_image(model, schedule, device) for name, model in models.items()}
    batches = make_batches(args.steps, args.batch_size, device)
    results = {"batch_size": args.batch_size, "steps_per_round": args.steps, "parameters": params,
               "flops_per_image": flops, "precisions": {}}
    for precision in args.precisions.split(","):
        steps = {}
        for name, model in models.items():
            train_model = torch.compile(model, mode=args.compile) if args.compile else model
            steps[name] = make_step(train_model, schedule, device, precision, args.channels_last)
            for i in range(args.warmup):
                steps[name](batches[i % len(batches)])

        def timed(step):
            return lambda: [step(batch) for batch in batches]

        times, loads = common.interleaved({name: timed(step) for name, step in steps.items()}, args.repeats, device,
                                          args.quiet_load, args.quiet_wait)
        per_model = {}
        for name in models:
            ips = [args.steps * args.batch_size / s for s in times[name]]
            per_model[name] = {"images_per_s": common.summary(ips),
                               "saved_activations_mb": saved_activation_mb(models[name], schedule, batches[0],
                                                                           device, precision)}
            if not args.no_memory:
                per_model[name]["peak_memory_mb"] = peak_memory_mb(args, name, precision)
        results["precisions"][precision] = {"models": per_model, "loadavg_per_round": loads}

    path = common.write_results(args, SCRIPT, device, results)
    report(results, args)
    print(f"\nwrote {path}")


def argparse_help_hidden():
    import argparse

    return argparse.SUPPRESS


def report(results: dict, args) -> None:
    params, flops = results["parameters"], results["flops_per_image"]
    goal = 1.5 if args.device == "cpu" else 2.0
    for precision, block in results["precisions"].items():
        models = block["models"]
        ours = models["ours"]["images_per_s"]["median"]
        loads = block["loadavg_per_round"]
        print(f"\n== training, batch {args.batch_size}, {precision}, device {args.device}, "
              f"load average {min(loads):.1f}-{max(loads):.1f} ==")
        rows = []
        for name, m in models.items():
            ips = m["images_per_s"]
            gflops = flops[name]["train_step"] * ips["median"] / 1e9
            ratio = ours / ips["median"]
            paired = sorted(a / b for a, b in zip(models["ours"]["images_per_s"]["values"], ips["values"]))
            rows.append([name, f"{params[name] / 1e6:.3f}M", f"{ips['median']:.1f}",
                         f"{ips['min']:.1f}-{ips['max']:.1f}", f"{flops[name]['train_step'] / 1e6:.1f}",
                         f"{gflops:.1f}", f"{m['saved_activations_mb']:.0f}",
                         f"{m.get('peak_memory_mb', float('nan')):.0f}",
                         "-" if name == "ours" else f"{ratio:.2f}x (goal {goal}x: {'met' if ratio >= goal else 'not met'})",
                         "-" if name == "ours" else f"{paired[0]:.2f}-{paired[-1]:.2f}"])
        common.print_table(["model", "params", "img/s", "spread", "MFLOP/img", "GFLOP/s", "saved MB",
                            "peak MB", "ours / this (medians)", "per-round ratios"], rows)


if __name__ == "__main__":
    main()
