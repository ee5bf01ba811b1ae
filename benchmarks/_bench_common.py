"""Shared pieces of the benchmark scripts: environment, the two models, interleaved timing, result files.

Every script imports this module *before* torch is imported anywhere else, so that OMP_WAIT_POLICY=PASSIVE
reaches the OpenMP runtime when torch loads it (busy-waiting OpenMP threads slow 2-thread PyTorch down 10-100x
on a CPU that other jobs share).
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

from ddpm_edu.diffusion import diffusion_loss  # noqa: E402
from ddpm_edu.models import make_model  # noqa: E402
from ddpm_edu.unet import count_parameters  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# The widely used MNIST configuration of diffusers' UNet2DModel (1.71M parameters with 11 class embeddings),
# and the same layout with a wider last level and 8 norm groups (as ours), 1.92M parameters, within 1% of ours.
DIFFUSERS_CONFIGS = {
    "diffusers-mnist": dict(block_out_channels=(32, 64, 64)),
    "diffusers-matched": dict(block_out_channels=(32, 64, 72), norm_num_groups=8),
}


# Dense (no 2:4 sparsity) peak TFLOP/s from NVIDIA's datasheets (H100 Tensor Core GPU datasheet; H200 Tensor Core
# GPU datasheet). The datasheets print the tensor-core figures "with sparsity"; dense is half of them.
# bf16: BF16 tensor cores; tf32: TF32 tensor cores (what fp32 convolutions and matmuls use with TF32 allowed, as the
# trainer does on CUDA); fp32: the CUDA cores without tensor cores. Matched on torch.cuda.get_device_name(), in order.
GPU_PEAK_TFLOPS = [
    ("H100 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),    # datasheet: BF16 1,671*, TF32 835*, FP32 60
    ("H100 PCIe", {"bf16": 756.5, "tf32": 378.0, "fp32": 51.0}),   # datasheet: BF16 1,513*, TF32 756*, FP32 51
    ("H100", {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),        # SXM5: BF16 1,979*, TF32 989*, FP32 67
    ("H200 NVL", {"bf16": 835.5, "tf32": 417.5, "fp32": 60.0}),    # datasheet: BF16 1,671*, TF32 835*, FP32 60
    ("H200", {"bf16": 989.5, "tf32": 494.5, "fp32": 67.0}),        # SXM: BF16 1,979*, TF32 989*, FP32 67
]


def peak_tflops(device: torch.device) -> tuple[str, dict] | tuple[None, None]:
    """(matched name, dense peaks) of the CUDA card `device`, or (None, None) for a card not in the table or a CPU."""
    if device.type != "cuda":
        return None, None
    name = torch.cuda.get_device_name(device)
    for key, peaks in GPU_PEAK_TFLOPS:
        if key in name:
            return key, peaks
    return None, None


# The set-ups every throughput benchmark can time, in the order they run: name -> (torch.compile mode, channels_last).
# 'reduce-overhead' (CUDA graphs) before 'compile': the likelier winner, and it fills the compiler's caches that the
# 'compile' row then reuses.
VARIANTS = {
    "eager": ("none", False),
    "channels-last": ("none", True),
    "reduce-overhead": ("reduce-overhead", False),
    "compile": ("default", False),
}


def common_args(description: str, layout_options: bool = True) -> argparse.ArgumentParser:
    """The options every benchmark shares; layout_options adds --channels-last and --compile (applied to every
    model), for the scripts that do not time those variants side by side."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    parser.add_argument("--precisions", default="fp32,bf16", help="comma list of fp32, bf16 (autocast)")
    parser.add_argument("--baselines", default="diffusers-mnist,diffusers-matched",
                        help=f"comma list of {sorted(DIFFUSERS_CONFIGS)}")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats (A, B, A, B, ...)")
    if layout_options:
        parser.add_argument("--channels-last", action="store_true",
                            help="channels_last memory format (model and input)")
        parser.add_argument("--compile", default=None, choices=[None, "default", "reduce-overhead", "max-autotune"],
                            help="torch.compile every model with this mode ('reduce-overhead' uses CUDA graphs on a GPU)")
    parser.add_argument("--quiet-load", type=float, default=2.5,
                        help="before each round, wait (up to --quiet-wait s) for the 1-min load average to drop below this")
    parser.add_argument("--quiet-wait", type=float, default=3.0, help="seconds to wait for a quiet moment per round")
    parser.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/<script>_<device>.json)")
    return parser


def setup(args) -> torch.device:
    if getattr(args, "baselines", "") and importlib.util.find_spec("diffusers") is None:
        print(f"diffusers is not installed (pip install -e '.[bench]'): timing ours only, not {args.baselines}")
        args.baselines = ""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return device


class DiffusersDenoiser(nn.Module):
    """diffusers' UNet2DModel behind ddpm_edu's model signature: forward(x, t, y) -> tensor."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet
        self.num_classes = 10  # label 10 = "no class", as in ddpm_edu (num_class_embeds=11)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.unet(x, t, class_labels=y).sample


def make_diffusers(name: str, class_conditional: bool = True) -> nn.Module:
    from diffusers import UNet2DModel  # only the benchmarks need diffusers (the 'bench' extra)

    unet = UNet2DModel(sample_size=28, in_channels=1, out_channels=1, layers_per_block=2,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                       num_class_embeds=11 if class_conditional else None, **DIFFUSERS_CONFIGS[name])
    return DiffusersDenoiser(unet)


def make_models(args, device: torch.device, seed: int = 0) -> dict[str, nn.Module]:
    """'ours' (make_model('default'), class-conditional: 10 digits + "no class") and the chosen baselines."""
    models = {}
    torch.manual_seed(seed)
    models["ours"] = make_model("default")
    for name in [b for b in args.baselines.split(",") if b]:
        torch.manual_seed(seed)
        models[name] = make_diffusers(name)
    for name, model in models.items():
        model.to(device)
        if args.channels_last:
            model.to(memory_format=torch.channels_last)
    return models


def fixed_inputs(train_batch: int, sample_batch: int, device: torch.device):
    """Seeded inputs for one training step (x0, t, noise, y) and one sampling step (xs, ts, ys)."""
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(train_batch, 1, 28, 28, generator=g) * 2 - 1).to(device)
    t = torch.randint(0, 1000, (train_batch,), generator=g).to(device)
    noise = torch.randn(x0.shape, generator=g).to(device)
    y = torch.randint(0, 10, (train_batch,), generator=g).to(device)
    xs = torch.randn(sample_batch, 1, 28, 28, generator=g).to(device)
    ts = torch.full((sample_batch,), 500, device=device)
    ys = (torch.arange(sample_batch) % 10).to(device)
    return x0, t, noise, y, xs, ts, ys


def load_saved(args):
    """For --report: read an earlier result JSON and restore the arguments its tables need."""
    saved = json.loads(Path(args.report).read_text())
    args.batch_size, args.device = saved["batch_size"], saved["argv"]["device"]
    return saved


def parameter_counts(models: dict[str, nn.Module]) -> dict[str, int]:
    return {name: count_parameters(model) for name, model in models.items()}


def autocast(device: torch.device, precision: str):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def make_train_step(model: nn.Module, schedule, device: torch.device, precision: str, lr: float = 1e-4,
                    memory_format=torch.contiguous_format):
    """The training step every benchmark times, written once: L_simple (ddpm_edu.diffusion.diffusion_loss) under
    autocast, backward, an AdamW step. Returns step(x0, t, noise, labels) -> loss; x0 and noise are laid out in
    `memory_format` (torch.channels_last for that variant)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def step(x0, t, noise, labels):
        x0, noise = x0.contiguous(memory_format=memory_format), noise.contiguous(memory_format=memory_format)
        with autocast(device, precision):
            loss = diffusion_loss(model, schedule, x0, t, noise, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def wait_for_quiet(max_load: float = 2.5, max_wait_s: float = 20.0) -> float:
    """Wait (a little) for the 1-minute load average to drop below max_load; return the load seen."""
    start = time.perf_counter()
    load = loadavg()
    while load > max_load and time.perf_counter() - start < max_wait_s:
        time.sleep(2.0)
        load = loadavg()
    return load


def interleaved(runs: dict, repeats: int, device: torch.device, quiet_load: float = 2.5, quiet_wait_s: float = 10.0):
    """Time each callable in `runs` once per round, round-robin (A, B, C, A, B, C, ...), alternating the order
    every round. Returns {name: [seconds per round]} and the load average at the start of each round."""
    times = {name: [] for name in runs}
    loads = []
    names = list(runs)
    for r in range(repeats):
        loads.append(wait_for_quiet(quiet_load, quiet_wait_s))
        for name in (names if r % 2 == 0 else names[::-1]):
            synchronize(device)
            start = time.perf_counter()
            runs[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times, loads


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "values": values}


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    try:
        import diffusers

        diffusers_version = diffusers.__version__
    except ImportError:
        diffusers_version = None
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "cpu": cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "torch": torch.__version__, "diffusers": diffusers_version, "python": platform.python_version(),
           "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def write_results(args, script: str, device: torch.device, payload: dict) -> Path:
    path = Path(args.out) if args.out else RESULTS / f"{script}_{device.type}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"script": f"benchmarks/{script}.py", "argv": vars(args), "environment": environment(device), **payload}
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def print_table(header: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in row] for row in [header] + rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
