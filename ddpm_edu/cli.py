"""The command line: `python -m ddpm_edu train | sample | denoise | inpaint | sdedit` (plumbing, not generated;
the application commands are in ddpm_edu.cli_apps, what they share in ddpm_edu.cli_common).

Every failure the user can cause — a wrong flag, a missing file, an impossible value — is reported as one line
on stderr with a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ddpm_edu.cli_apps import add_application_parsers
from ddpm_edu.cli_common import (EXIT_USAGE, CliError, OneLineParser, finite_float, non_negative_int, positive_int,
                                 unit_float)
from ddpm_edu.imageio import save_array, save_images


# ----------------------------------------------------------------------------------------------- train
def add_train_parser(sub) -> None:
    from ddpm_edu.configs import PRESETS
    from ddpm_edu.data import DATASETS
    from ddpm_edu.diffusion import PREDICTION_TYPES
    from ddpm_edu.schedules import SCHEDULES
    from ddpm_edu.train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="train a diffusion model (chapter 4)",
                       description="Train a diffusion model and write checkpoints to --out. "
                                   "Run under `torchrun --nproc_per_node=N` for several GPUs or processes.")
    p.add_argument("--dataset", choices=DATASETS, default=d.dataset,
                   help="training data; 'mnist-subset' is bundled (offline), the others are read from --data-root")
    p.add_argument("--data-root", default="~/.cache/ddpm_edu", help="folder of torchvision-format datasets")
    p.add_argument("--download", action="store_true", help="download a torchvision dataset if missing (online)")
    p.add_argument("--limit", type=positive_int, default=None, help="use only the first N training images")
    p.add_argument("--preset", choices=sorted(PRESETS), default=d.preset, help="model preset (chapter 3)")
    p.add_argument("--unconditional", action="store_true", help="ignore labels (no classifier-free guidance)")
    p.add_argument("--label-dropout", type=unit_float, default=d.label_dropout,
                   help="probability of training a step without its label (classifier-free guidance)")
    p.add_argument("--schedule", choices=SCHEDULES, default=d.schedule, help="noise schedule (chapter 2)")
    p.add_argument("--T", type=positive_int, default=d.T, help="number of diffusion steps")
    p.add_argument("--prediction-type", choices=PREDICTION_TYPES, default=d.prediction_type,
                   help="what the network predicts")
    p.add_argument("--steps", type=positive_int, default=d.steps, help="optimizer steps in total")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="images per step (all processes)")
    p.add_argument("--lr", type=finite_float, default=d.lr, help="peak learning rate of AdamW")
    p.add_argument("--warmup-steps", type=non_negative_int, default=d.warmup_steps, help="linear warm-up steps")
    p.add_argument("--weight-decay", type=finite_float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--grad-clip", type=finite_float, default=d.grad_clip, help="gradient-norm clipping threshold")
    p.add_argument("--ema-decay", type=finite_float, default=d.ema_decay, help="EMA decay of the weights, in [0, 1)")
    p.add_argument("--seed", type=non_negative_int, default=d.seed, help="random seed")
    p.add_argument("--device", default=d.device, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=d.precision,
                   help="auto: bf16 autocast on CUDA, fp32 elsewhere")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for PyTorch")
    p.add_argument("--out", default=d.out_dir, help="checkpoint folder (created if missing)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--log-every", type=positive_int, default=d.log_every, help="steps between log lines")
    p.add_argument("--checkpoint-every", type=non_negative_int, default=d.checkpoint_every,
                   help="steps between checkpoints (0: only at the end)")
    p.add_argument("--sample-every", type=non_negative_int, default=d.sample_every,
                   help="steps between sample grids written to OUT/samples/ (0: never)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def run_train(args) -> int:
    import torch

    from ddpm_edu.data import load_dataset
    from ddpm_edu.train import TrainConfig, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    if not args.resume and (out / "config.json").exists():
        raise CliError(f"--out {out} already holds a checkpoint; pass --resume to continue it or choose a new folder")
    if args.resume and not (out / "config.json").exists():
        raise CliError(f"--resume: no checkpoint in {out}")
    config = TrainConfig(dataset=args.dataset, limit=args.limit, preset=args.preset,
                         class_conditional=not args.unconditional, label_dropout=args.label_dropout,
                         schedule=args.schedule, T=args.T, prediction_type=args.prediction_type, steps=args.steps,
                         batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                         weight_decay=args.weight_decay, grad_clip=args.grad_clip, ema_decay=args.ema_decay,
                         seed=args.seed, device=args.device, precision=args.precision, compile=args.compile,
                         out_dir=str(out), log_every=args.log_every, checkpoint_every=args.checkpoint_every,
                         sample_every=args.sample_every, resume=args.resume, progress=not args.no_progress)
    config.validate()
    dataset = load_dataset(args.dataset, "train", root=args.data_root, download=args.download, limit=args.limit)
    trainer = Trainer(config, dataset=dataset, sample_fn=write_sample_grid)
    if trainer.step >= config.steps:
        raise CliError(f"--resume: the checkpoint in {out} is already at step {trainer.step} >= --steps {config.steps}")
    history = trainer.fit()  # saves a checkpoint at the last step
    if trainer.dist.world_size > 1:
        checksum = sum(float(p.double().sum()) for p in trainer.model.parameters())
        print(f"rank {trainer.dist.rank}: step {trainer.step}, weights checksum {checksum:.12e}", flush=True)
        import torch.distributed as dist

        dist.destroy_process_group()
    if trainer.dist.is_main and history:
        last = history[-1]
        print(f"done: step {trainer.step}, loss {last['loss']:.4f}, {last['images_per_s']:.0f} images/s, "
              f"checkpoint in {out}")
    return 0


def write_sample_grid(trainer) -> None:
    """Periodic sample grid of the EMA model (DDIM, 50 steps), written to OUT/samples/step_NNNNNN.png."""
    import torch

    from ddpm_edu.sampling import sample

    n_classes = trainer.dataset.num_classes if trainer.config.class_conditional else None
    labels = torch.arange(10).repeat_interleave(8) % n_classes if n_classes else None
    shape = (80, *trainer.dataset.image_shape)
    g = torch.Generator().manual_seed(0)
    images = sample(trainer.ema.model, trainer.schedule, shape, sampler="ddim", steps=50, labels=labels,
                    prediction_type=trainer.config.prediction_type, generator=g, device=trainer.device)
    save_images(images, Path(trainer.config.out_dir) / "samples" / f"step_{trainer.step:06d}.png", nrow=8)


# ---------------------------------------------------------------------------------------------- sample
def add_sample_parser(sub) -> None:
    from ddpm_edu.sampling import SAMPLERS

    p = sub.add_parser("sample", help="generate images with a trained model (chapter 5)",
                       description="Generate images. Without --checkpoint, the reference MNIST model shipped with "
                                   "the package is used.")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped reference model)")
    p.add_argument("--n", type=positive_int, default=64, help="number of images")
    p.add_argument("--sampler", choices=list(SAMPLERS), default="ddim", help="reverse-process sampler")
    p.add_argument("--steps", type=positive_int, default=None, help="sampling steps (default: 50 DDIM, T for DDPM)")
    p.add_argument("--eta", type=unit_float, default=0.0, help="DDIM stochasticity (0: deterministic)")
    p.add_argument("--label", type=int, default=None,
                   help="class to generate (class-conditional models); default: classes 0..9 in turn")
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
    import torch

    from ddpm_edu.checkpoint import load_model
    from ddpm_edu.sampling import sample
    from ddpm_edu.utils import pick_device

    out = Path(args.out)
    if out.suffix.lower() not in (".png", ".npy"):
        raise CliError(f"--out must end in .png or .npy, got {out.name!r}")
    device = pick_device(args.device)
    model, schedule, config = load_model(args.checkpoint, device=device)
    num_classes = config["model"].get("num_classes")
    if args.label is not None and not num_classes:
        raise CliError("--label: this model is unconditional")
    if args.label is not None and not 0 <= args.label < num_classes:
        raise CliError(f"--label must be in [0, {num_classes - 1}], got {args.label}")
    if args.guidance != 1.0 and (not num_classes or args.unconditional):
        raise CliError("--guidance needs a class-conditional model and labels")
    steps = args.steps if args.steps is not None else (50 if args.sampler == "ddim" else None)
    if steps is not None and steps > schedule.T:
        raise CliError(f"--steps must be at most the model's T = {schedule.T}, got {steps}")
    g = torch.Generator().manual_seed(args.seed)
    batches = []
    for start in range(0, args.n, args.batch_size):
        n = min(args.batch_size, args.n - start)
        labels = None
        if num_classes and not args.unconditional:
            labels = torch.full((n,), args.label) if args.label is not None else torch.arange(start, start + n) % 10
        shape = (n, config["model"]["in_channels"], *config["data"]["image_shape"][1:])
        batches.append(sample(model, schedule, shape, sampler=args.sampler, steps=steps, eta=args.eta,
                              labels=labels, guidance_scale=args.guidance, generator=g, device=device,
                              prediction_type=config["prediction_type"], progress=not args.no_progress).cpu())
    images = torch.cat(batches)
    if out.suffix.lower() == ".png":
        save_images(images, out, nrow=10 if labels is not None and args.label is None else 8)
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
    except (ValueError, FileNotFoundError, ImportError, PermissionError, IsADirectoryError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
