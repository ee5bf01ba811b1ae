"""Training throughput (images/s) of the package's own training step against diffusers' UNet2DModel, every mode.

What is timed is `ddpm_edu.train.Trainer.train_step`, the step `python -m ddpm_edu train` runs: a batch drawn on the
device from the device-resident dataset, L_simple under autocast (or not), backward, gradient clipping, AdamW
(fused on CUDA), the EMA update and, on CUDA, the device-side finite guard. diffusers' UNet2DModel is timed in the
very same Trainer (a subclass whose `build_model` returns it), so both networks get the same data, loss,
optimizer, EMA and mode. Both are class-conditional (10 digits + a "no class" label; diffusers: num_class_embeds=11).

One invocation runs every row: each variant (eager, channels-last, reduce-overhead = torch.compile with CUDA
graphs, compile = torch.compile's default mode) at each precision (fp32, bf16 autocast) and batch size. Within a
row the models are timed interleaved (A, B, A, B, ...); each row is printed as soon as it is measured and the JSON
is rewritten after every row, so a run cut short keeps what it measured. Cheap rows (eager, channels-last) run
first; compiled rows follow (reduce-overhead, then compile; fp32 before bf16); a row whose estimated cost would overrun --budget is skipped
and listed as skipped. A row that fails (say, torch.compile unavailable) is reported and the run goes on.

Columns: images/s (median over rounds, min-max), ratio ours / diffusers (medians), FLOPs per image of a training
step (torch.utils.flop_counter, forward + backward, fp32 graph), achieved TFLOP/s = FLOPs per image x images/s,
% of the card's dense peak (bf16 rows: BF16 tensor cores; fp32 rows: TF32 tensor cores, which fp32 convolutions
and matmuls use on CUDA; table in _bench_common.GPU_PEAK_TFLOPS), and host synchronisations per step (CUDA:
torch.cuda.set_sync_debug_mode counts them during one step).

    python benchmarks/bench_train_throughput.py --device cuda --out results.json     # all rows, <= 90 s on a GPU
    python benchmarks/bench_train_throughput.py --device cuda --batch-sizes 128,256,512 --budget 180
    python benchmarks/bench_train_throughput.py --device cpu                          # CPU: eager, ~3-6 minutes
    python benchmarks/bench_train_throughput.py --quick --out /tmp/bench.json         # CPU plumbing check, ~30 s
    python benchmarks/bench_train_throughput.py --report results.json                 # print a saved result
"""
import _bench_common as common  # first: sets OMP_WAIT_POLICY before torch loads

import json
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from ddpm_edu.data import load_dataset
from ddpm_edu.train import TrainConfig, Trainer

SCRIPT = "bench_train_throughput"
VARIANTS = common.VARIANTS
DEFAULT_COST_S = {"eager": 6.0, "compiled": 45.0}  # cost guesses for a row before one of its kind was measured


def trainer_for(name: str, dataset, device: torch.device, batch_size: int, precision: str, variant: str,
                out_dir: str) -> Trainer:
    """A Trainer of the 'default' preset ('ours') or of a diffusers baseline, in the variant's mode."""
    compile_mode, channels_last = VARIANTS[variant]
    config = TrainConfig(preset="default", steps=10**6, batch_size=batch_size, precision=precision,
                         compile=compile_mode, channels_last=channels_last, device=str(device), out_dir=out_dir,
                         checkpoint_every=0, progress=False)
    if name == "ours":
        return Trainer(config, dataset=dataset)

    class BaselineTrainer(Trainer):
        def build_model(self):
            return common.make_diffusers(name)

    return BaselineTrainer(config, dataset=dataset)


def probe(name: str, dataset, device: torch.device, out_dir: str) -> tuple[float, int]:
    """FLOPs of one eager fp32 training step per image (batch 8), as torch.utils.flop_counter counts them, and the
    number of parameters."""
    trainer = trainer_for(name, dataset, device, 8, "fp32", "eager", out_dir)
    with FlopCounterMode(display=False) as counter:
        trainer.train_step()
    return counter.get_total_flops() / 8, common.parameter_counts({name: trainer.model})[name]


def syncs_per_step(trainer: Trainer, device: torch.device) -> int | None:
    """Host synchronisations in one training step (CUDA only: torch.cuda.set_sync_debug_mode warns on each)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def measure_row(args, row: dict, dataset, device, out_dir: str) -> dict:
    """Build, warm up and time every model of one row (variant, precision, batch size), interleaved."""
    trainers = {name: trainer_for(name, dataset, device, row["batch_size"], row["precision"], row["variant"], out_dir)
                for name in args.models}
    compiled = VARIANTS[row["variant"]][0] != "none"
    warmup = max(args.warmup, 3) if compiled else args.warmup  # CUDA graphs are recorded on the 2nd-3rd call
    start = time.perf_counter()
    for trainer in trainers.values():
        for _ in range(warmup):
            trainer.train_step()
    common.synchronize(device)
    warmup_s = time.perf_counter() - start
    syncs = {name: syncs_per_step(trainer, device) for name, trainer in trainers.items()}

    def run(trainer):
        return lambda: [trainer.train_step() for _ in range(args.steps)]

    quiet = (args.quiet_load, args.quiet_wait) if device.type == "cpu" else (float("inf"), 0.0)
    times, loads = common.interleaved({name: run(t) for name, t in trainers.items()}, args.repeats, device, *quiet)
    models = {}
    for name in trainers:
        ips = [args.steps * row["batch_size"] / s for s in times[name]]
        models[name] = {"images_per_s": common.summary(ips), "host_syncs_per_step": syncs[name]}
    return {**row, "models": models, "warmup_s": warmup_s, "loadavg_per_round": loads}


def row_lines(row: dict, results: dict) -> list[list[str]]:
    """Table rows (one per model) of a measured row."""
    peaks = results.get("peak_tflops")
    peak_kind = "bf16" if row["precision"] == "bf16" else "tf32"
    ours = row["models"]["ours"]["images_per_s"]["median"]
    lines = []
    for name, m in row["models"].items():
        ips = m["images_per_s"]
        tflops = results["flops_per_image"][name] * ips["median"] / 1e12
        share = f"{100 * tflops / peaks[peak_kind]:.2f}% {peak_kind}" if peaks else "-"
        lines.append([row["variant"], row["precision"], str(row["batch_size"]), name, f"{ips['median']:,.0f}",
                      f"{ips['min']:,.0f}-{ips['max']:,.0f}", "-" if name == "ours" else f"{ours / ips['median']:.2f}x",
                      f"{results['flops_per_image'][name] / 1e9:.2f}", f"{tflops:.3g}", share,
                      "-" if m["host_syncs_per_step"] is None else str(m["host_syncs_per_step"]),
                      f"{row['warmup_s']:.0f}"])
    return lines


HEADER = ["variant", "precision", "batch", "model", "img/s", "spread", "ours/this", "GFLOP/img", "TFLOP/s",
          "of peak", "syncs/step", "warm-up s"]


def print_row(lines: list[list[str]], first: bool) -> None:
    widths = [10, 9, 5, 17, 9, 15, 9, 9, 8, 12, 10, 9]
    if first:
        print("  ".join(h.rjust(w) for h, w in zip(HEADER, widths)), flush=True)
    for line in lines:
        print("  ".join(c.rjust(w) for c, w in zip(line, widths)), flush=True)


def plan(args) -> list[dict]:
    """Rows in the order they run: cheap (eager) rows first, then compiled ones, default batch size first."""
    batches = [int(b) for b in args.batch_sizes.split(",")]
    precisions = args.precisions.split(",")
    variants = args.variants.split(",")
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    cheap = [v for v in variants if VARIANTS[v][0] == "none"]
    costly = [v for v in variants if VARIANTS[v][0] != "none"]
    rows = [dict(variant=v, precision=p, batch_size=b) for b in batches for v in cheap for p in precisions]
    rows += [dict(variant=v, precision=p, batch_size=b) for b in batches for p in precisions for v in costly]
    return rows


def main() -> None:
    parser = common.common_args(__doc__.splitlines()[0], layout_options=False)
    parser.set_defaults(baselines="diffusers-mnist", repeats=3, precisions="fp32,bf16")
    parser.add_argument("--variants", default=None,
                        help=f"comma list of {', '.join(VARIANTS)} (default: all on CUDA, eager on the CPU)")
    parser.add_argument("--batch-sizes", "--batch-size", dest="batch_sizes", default="128",
                        help="comma list of batch sizes (default: 128)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per round (CUDA 20, CPU 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per model before timing (CUDA 5, "
                                                                 "CPU 1; compiled rows at least 3)")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for the whole run: a row that would overrun it is skipped (CUDA 90, CPU none)")
    parser.add_argument("--quick", action="store_true",
                        help="plumbing check in seconds: CPU, batch 8, 1 step, 1 round, eager fp32")
    parser.add_argument("--report", default=None, help="only print the table of an earlier result JSON")
    parser.add_argument("--no-memory", action="store_true",
                        help="accepted for older command lines; this version measures no memory")
    args = parser.parse_args()
    if args.report:
        return report(json.loads(Path(args.report).read_text()))
    if args.quick:
        args.device, args.batch_sizes, args.steps, args.repeats, args.warmup = "cpu", "8", 1, 1, 1
        args.variants, args.precisions = args.variants or "eager", "fp32"
    cuda = args.device.startswith("cuda")
    args.variants = args.variants or (",".join(VARIANTS) if cuda else "eager")
    args.steps = args.steps or (20 if cuda else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if cuda else 1)
    args.budget = args.budget if args.budget is not None else (90.0 if cuda else 0.0)
    started = time.perf_counter()
    device = common.setup(args)  # drops the baselines when diffusers is not installed
    args.models = ["ours"] + [b for b in args.baselines.split(",") if b]
    rows = plan(args)
    dataset = load_dataset("mnist-subset", "train")
    out_dir = tempfile.mkdtemp(prefix="bench_train_")  # never written: no row saves a checkpoint
    peak_name, peaks = common.peak_tflops(device)
    results = {"models": args.models, "parameters": {}, "flops_per_image": {}, "peak_tflops": peaks,
               "peak_table_entry": peak_name, "rows": [], "skipped": [], "failed": []}
    for name in args.models:
        results["flops_per_image"][name], results["parameters"][name] = probe(name, dataset, device, out_dir)
    gpu = torch.cuda.get_device_name(device) if cuda else "none"
    print(f"== training step, Trainer.train_step, device {device} ({gpu}; peak table: {peak_name or 'no entry'}), "
          f"torch {torch.__version__}; {args.steps} steps x {args.repeats} rounds per row; "
          f"budget {args.budget or 'none'} s ==", flush=True)
    cost = {}
    path = None
    for row in rows:
        kind = "compiled" if VARIANTS[row["variant"]][0] != "none" else "eager"
        spent = time.perf_counter() - started
        estimate = cost.get(kind, DEFAULT_COST_S[kind])
        if args.budget and spent + estimate > args.budget:
            results["skipped"].append({**row, "reason": f"time budget: {spent:.0f} s spent, ~{estimate:.0f} s more"})
            print(f"skipped {row['variant']} {row['precision']} batch {row['batch_size']}: "
                  f"{results['skipped'][-1]['reason']}", flush=True)
            continue
        row_start = time.perf_counter()
        try:
            measured = measure_row(args, row, dataset, device, out_dir)
        except Exception as e:  # noqa: BLE001 - a failing mode must not cost the other rows
            results["failed"].append({**row, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
            print(f"failed {row['variant']} {row['precision']} batch {row['batch_size']}: "
                  f"{results['failed'][-1]['error']}", flush=True)
            continue
        finally:
            if kind == "compiled":
                torch._dynamo.reset()  # each row compiles fresh models; keep Dynamo's recompile limit out of it
        cost[kind] = max(cost.get(kind, 0.0), time.perf_counter() - row_start)
        results["rows"].append(measured)
        print_row(row_lines(measured, results), first=len(results["rows"]) == 1)
        results["wall_s"] = time.perf_counter() - started
        path = common.write_results(args, SCRIPT, device, results)  # after every row: a cut run keeps its rows
    results["wall_s"] = time.perf_counter() - started
    path = common.write_results(args, SCRIPT, device, results)
    print(f"\n{len(results['rows'])} rows measured, {len(results['skipped'])} skipped, {len(results['failed'])} "
          f"failed in {results['wall_s']:.0f} s; wrote {path}", flush=True)


def report(results: dict) -> None:
    env = results["environment"]
    print(f"== {results['script']}: {env.get('gpu', env['cpu'])}, torch {env['torch']}, {env['date']} ==")
    for i, row in enumerate(results["rows"]):
        print_row(row_lines(row, results), first=i == 0)
    for row in results["skipped"] + results["failed"]:
        print(f"not measured: {row['variant']} {row['precision']} batch {row['batch_size']}: "
              f"{row.get('reason') or row.get('error')}")


if __name__ == "__main__":
    main()
