"""The command line: `python -m ddpm_edu train | sample | denoise | inpaint | sdedit` (plumbing, not generated;
the application commands are in ddpm_edu.cli_apps, what every command shares in ddpm_edu.cli_common).

Every failure the user can cause — a wrong flag, a missing or damaged file, an impossible value, an output that
cannot be written — is reported as one line on stderr with a non-zero exit status, never a traceback. Where the
output goes is checked before any work starts, and nothing the user had is overwritten until the new file is
complete.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields, replace
from pathlib import Path

import torch

from ddpm_edu.checkpoint import load_model, read_config
from ddpm_edu.cli_apps import add_application_parsers
from ddpm_edu.cli_common import (EXIT_INTERRUPTED, EXIT_USAGE, CliError, OneLineParser, finite_float,
                                 non_negative_int, positive_int, unit_float)
from ddpm_edu.configs import PRESETS
from ddpm_edu.data import DATASETS, check_dataset_name, load_dataset
from ddpm_edu.diffusion import PREDICTION_TYPES
from ddpm_edu.imageio import ImageReadError, save_array, save_images
from ddpm_edu.sampling import SAMPLERS, sample, sample_n
from ddpm_edu.schedules import SCHEDULES
from ddpm_edu.train import COMPILE_MODES, NonFiniteLossError, TrainConfig, Trainer, TrainingInterrupted
from ddpm_edu.utils import check_writable_file, check_writable_folder, pick_device

# TrainConfig fields that define what is trained: on --resume they come from the checkpoint, and a flag that asks
# for a different value is refused; every other flag (steps, learning rate, logging, device) may change.
RUN_IDENTITY = ("dataset", "image_size", "limit", "preset", "class_conditional", "schedule", "T", "prediction_type")
FLAG_OF = {"class_conditional": "--unconditional", "progress": "--no-progress", "out_dir": "--out"}


def flag_of(field: str) -> str:
    return FLAG_OF.get(field, "--" + field.replace("_", "-"))


def dataset_name(text: str) -> str:
    """argparse type of --dataset: a DATASETS name or folder:PATH."""
    try:
        return check_dataset_name(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DATASETS)} or folder:PATH, got {text!r}") \
            from None


# ----------------------------------------------------------------------------------------------- train
def add_train_parser(sub) -> None:
    """Flags default to None here, so that --resume can tell what was given; the defaults shown are TrainConfig's."""
    d = TrainConfig()

    def default(value) -> str:
        return f" (default: {value})"

    p = sub.add_parser("train", help="train a diffusion model (chapter 4)",
                       description="Train a diffusion model and write checkpoints to --out. With --resume, the run "
                                   "continues with the settings stored in the checkpoint; flags given override the "
                                   "schedule of the run (--steps, --lr, ...) but not what is trained. Run under "
                                   "`torchrun --nproc_per_node=N` for several GPUs or processes.")
    p.add_argument("--dataset", type=dataset_name, metavar="{" + ",".join(DATASETS) + ",folder:PATH}",
                   help="training data: 'mnist-subset' is bundled (offline); mnist, fashion-mnist and cifar10 are "
                        "read from --data-root; folder:PATH is a folder of your own pictures (one subfolder per "
                        "class, or none)" + default(d.dataset))
    p.add_argument("--data-root", help="folder of torchvision-format datasets" + default(d.data_root))
    p.add_argument("--download", action="store_true", default=None,
                   help="download a torchvision dataset if missing (online)")
    p.add_argument("--image-size", type=positive_int,
                   help="resize (and centre-crop) the images to this side (default: the dataset's own size; "
                        f"for a folder of pictures of different sizes, {32})")
    p.add_argument("--limit", type=positive_int,
                   help="train on a fixed random subset of N training images (default: all of them)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="model preset (chapter 3)" + default(d.preset))
    p.add_argument("--unconditional", action="store_true", default=None,
                   help="ignore labels (no classifier-free guidance); automatic for a folder without subfolders")
    p.add_argument("--label-dropout", type=unit_float, help="probability of training a step without its label "
                                                            "(classifier-free guidance)" + default(d.label_dropout))
    p.add_argument("--schedule", choices=SCHEDULES, help="noise schedule (chapter 2)" + default(d.schedule))
    p.add_argument("--T", type=positive_int, help="number of diffusion steps" + default(d.T))
    p.add_argument("--prediction-type", choices=PREDICTION_TYPES,
                   help="what the network predicts" + default(d.prediction_type))
    p.add_argument("--steps", type=positive_int, help="optimizer steps in total" + default(d.steps))
    p.add_argument("--batch-size", type=positive_int, help="images per step (all processes)" + default(d.batch_size))
    p.add_argument("--lr", type=finite_float, help="peak learning rate of AdamW, in (0, 1)" + default(d.lr))
    p.add_argument("--warmup-steps", type=non_negative_int,
                   help="linear warm-up steps, at most --steps (default: min(100, steps / 10))")
    p.add_argument("--weight-decay", type=finite_float, help="AdamW weight decay, >= 0" + default(d.weight_decay))
    p.add_argument("--grad-clip", type=finite_float,
                   help="gradient-norm clipping threshold, > 0" + default(d.grad_clip))
    p.add_argument("--ema-decay", type=finite_float, help="EMA decay of the weights, in [0, 1)" + default(d.ema_decay))
    p.add_argument("--seed", type=non_negative_int, help="random seed" + default(d.seed))
    p.add_argument("--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps" + default(d.device))
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"),
                   help="auto: fp32 on every device (bf16 autocast was slower on an H200, chapter 4); bf16: bf16 "
                        "autocast" + default(d.precision))
    p.add_argument("--compile", choices=COMPILE_MODES,
                   help="torch.compile the model; reduce-overhead also replays it as CUDA graphs on a GPU"
                        + default(d.compile))
    p.add_argument("--channels-last", action="store_true", default=None,
                   help="keep the model and the images in the channels_last (NHWC) memory format"
                        + default(d.channels_last))
    p.add_argument("--threads", type=positive_int, help="CPU threads for PyTorch (default: PyTorch's choice)")
    p.add_argument("--out", help="checkpoint folder (created if missing)" + default(d.out_dir))
    p.add_argument("--resume", action="store_true", help="continue the run whose checkpoint is in --out")
    p.add_argument("--log-every", type=positive_int,
                   help="steps between log lines (printed when there is no progress bar: --no-progress, or no "
                        "terminal) and between loss readings" + default(d.log_every))
    p.add_argument("--checkpoint-every", type=non_negative_int,
                   help="steps between checkpoints, 0: only at the end" + default(d.checkpoint_every))
    p.add_argument("--sample-every", type=non_negative_int,
                   help="steps between sample grids written to OUT/samples/, 0: never" + default(d.sample_every))
    p.add_argument("--no-progress", action="store_true", default=None,
                   help="no progress bar: a log line every --log-every steps instead (also when stderr is not a "
                        "terminal)")
    p.set_defaults(func=run_train)


def given_settings(args) -> dict:
    """The TrainConfig fields the command line set explicitly."""
    given = {f.name: getattr(args, f.name) for f in fields(TrainConfig)
             if getattr(args, f.name, None) is not None and f.name not in ("resume", "out_dir")}
    if args.unconditional:
        given["class_conditional"] = False
    if args.no_progress:
        given["progress"] = False
    return given


def train_config(args, out: Path) -> TrainConfig:
    """The run's TrainConfig: the flags given over TrainConfig's defaults, or over the checkpoint's settings."""
    given = given_settings(args)
    if not args.resume:
        if (out / "config.json").exists():
            raise CliError(f"--out {out} already holds a checkpoint; pass --resume to continue it or choose a "
                           f"new folder")
        return TrainConfig(**given, out_dir=str(out))
    if not (out / "config.json").is_file():
        raise CliError(f"--resume: no checkpoint in {out}")
    saved = TrainConfig.from_dict(read_config(out).get("train", {}))
    for field in RUN_IDENTITY:
        if field in given and given[field] != getattr(saved, field):
            raise CliError(f"--resume: {flag_of(field)} {given[field]!r} differs from the checkpoint in {out} "
                           f"({field}={getattr(saved, field)!r}); leave {flag_of(field)} out to continue that run, "
                           f"or choose a new --out")
    return replace(saved, **given, resume=True, out_dir=str(out))


def validated(config: TrainConfig) -> TrainConfig:
    """config.validate(), its ValueError turned into a one-line message that names the flag."""
    try:
        return config.validate()
    except ValueError as e:
        message = str(e)
        field = message.split(" ", 1)[0]
        if field in {f.name for f in fields(TrainConfig)}:
            message = flag_of(field) + message[len(field):]
        raise CliError(message) from None


def run_train(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or TrainConfig.out_dir).expanduser()
    config = validated(train_config(args, out))
    check_writable_folder(out, "--out")  # before the data is read and any step is taken
    dataset = load_dataset(config.dataset, "train", root=config.data_root, download=bool(args.download),
                           limit=config.limit, image_size=config.image_size)
    if config.class_conditional and dataset.num_classes is None:
        if args.unconditional is False or args.resume:
            raise CliError(f"--dataset {config.dataset} has no classes (no subfolders); pass --unconditional")
        print(f"{config.dataset} has no class subfolders: training an unconditional model", flush=True)
        config = replace(config, class_conditional=False)
    bar = config.progress and sys.stderr.isatty()  # a bar redrawn with \r is noise in a log file
    trainer = Trainer(config, dataset=dataset, sample_fn=write_sample_grid, log=None if bar else print_now)
    if trainer.step >= config.steps:
        raise CliError(f"--resume: the checkpoint in {out} is already at step {trainer.step}; pass a larger --steps "
                       f"than {config.steps} to train on")
    history = trainer.fit()  # saves a checkpoint at the last step
    if trainer.dist.world_size > 1:
        with torch.no_grad():
            checksum = sum(float(p.double().sum()) for p in trainer.model.parameters())
        print(f"rank {trainer.dist.rank}: step {trainer.step}, weights checksum {checksum:.12e}", flush=True)
        torch.distributed.destroy_process_group()
    if trainer.dist.is_main and history:
        last = history[-1]
        print(f"done: step {trainer.step}, loss {last['loss']:.4f}, {last['images_per_s']:.0f} images/s, "
              f"checkpoint in {out}")
    return 0


def print_now(line: str) -> None:
    print(line, flush=True)


def write_sample_grid(trainer) -> None:
    """Periodic sample grid of the EMA model (DDIM, 50 steps), written to OUT/samples/step_NNNNNN.png: 8 samples of
    each of the first 10 classes (a row each), or 64 unconditional samples."""
    n_classes = trainer.dataset.num_classes if trainer.config.class_conditional else None
    labels = torch.arange(min(n_classes, 10)).repeat_interleave(8) if n_classes else None
    shape = (64 if labels is None else len(labels), *trainer.dataset.image_shape)
    g = torch.Generator().manual_seed(0)
    images = sample(trainer.ema.model, trainer.schedule, shape, sampler="ddim", steps=min(50, trainer.schedule.T),
                    labels=labels, prediction_type=trainer.config.prediction_type, generator=g,
                    device=trainer.device)
    save_images(images, Path(trainer.config.out_dir) / "samples" / f"step_{trainer.step:06d}.png", nrow=8)


# ---------------------------------------------------------------------------------------------- sample
def add_sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate images with a trained model (chapter 5)",
                       description="Generate images. Without --checkpoint, the reference MNIST model shipped with "
                                   "the package is used. Channels, image size and classes come from the checkpoint.")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the shipped reference model)")
    p.add_argument("--n", type=positive_int, default=64, help="number of images")
    samplers = "; ".join(f"{name}: {cls.__doc__.split('(')[0].strip()}, {cls.default_steps or 'all T'} steps by default"
                         for name, cls in SAMPLERS.items())
    p.add_argument("--sampler", choices=list(SAMPLERS), default="ddim", help=f"reverse-process sampler ({samplers})")
    p.add_argument("--steps", type=positive_int, help="sampling steps (default: the sampler's, see --sampler)")
    p.add_argument("--eta", type=unit_float, help="DDIM stochasticity in [0, 1] (default 0: deterministic)")
    p.add_argument("--label", type=int,
                   help="class to generate (class-conditional models; default: every class in turn)")
    p.add_argument("--unconditional", action="store_true", help="sample without labels")
    p.add_argument("--guidance", type=finite_float, default=1.0, help="classifier-free guidance scale (1: none)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch-size", type=positive_int, default=256, help="images generated at once")
    p.add_argument("--out", required=True, help="output file: .png (a grid) or .npy (an (N, H, W) or (N, H, W, C) "
                                                "float32 array in [0, 1])")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_sample)


def run_sample(args) -> int:
    out = check_writable_file(args.out, (".png", ".npy"), "--out")  # before the (possibly long) sampling
    device = pick_device(args.device)
    model, schedule, config = load_model(args.checkpoint, device=device)
    num_classes = config["model"].get("num_classes")
    if args.label is not None and not num_classes:
        raise CliError("--label: this model is unconditional")
    if args.label is not None and not 0 <= args.label < num_classes:
        raise CliError(f"--label must be in [0, {num_classes - 1}], got {args.label}")
    if args.guidance != 1.0 and (not num_classes or args.unconditional):
        raise CliError("--guidance needs a class-conditional model and labels")
    default_steps = SAMPLERS[args.sampler].default_steps
    steps = args.steps if args.steps is not None else (None if default_steps is None else min(default_steps, schedule.T))
    if steps is not None and steps > schedule.T:
        raise CliError(f"--steps must be at most the model's T = {schedule.T}, got {steps}")
    if args.eta is not None and args.sampler != "ddim":
        raise CliError(f"--eta applies to --sampler ddim only, not {args.sampler}")
    size = config["model"].get("image_size", 28)
    labels = None
    if num_classes and not args.unconditional:
        labels = torch.full((args.n,), args.label) if args.label is not None else torch.arange(args.n) % num_classes
    images = sample_n(model, schedule, args.n, (config["model"]["in_channels"], size, size), batch_size=args.batch_size,
                      labels=labels, generator=torch.Generator().manual_seed(args.seed), sampler=args.sampler,
                      steps=steps, eta=args.eta, guidance_scale=args.guidance, device=device,
                      progress=not args.no_progress)
    if out.suffix.lower() == ".png":
        cycling = labels is not None and args.label is None
        save_images(images, out, nrow=num_classes if cycling and num_classes <= 16 else 8)
    else:
        save_array(images, out)
    print(f"wrote {len(images)} images to {out}")
    return 0


# ------------------------------------------------------------------------------------------------ main
def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m ddpm_edu", description="ddpm_edu: train and use diffusion models.")
    sub = parser.add_subparsers(dest="command", metavar="{train,sample,denoise,inpaint,sdedit}",
                                parser_class=OneLineParser)
    sub.required = True
    add_train_parser(sub)
    add_sample_parser(sub)
    add_application_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingInterrupted as e:
        print(f"interrupted: {e}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (NonFiniteLossError, ImageReadError, ValueError, OSError) as e:  # OSError: FileNotFound, Permission...
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
