"""The applications on the command line: `python -m ddpm_edu denoise | inpaint | sdedit IMAGE --out OUT.png`
(plumbing, not generated; the methods are ddpm_edu.applications, chapter 6).

Any picture Pillow reads, of any size and colour, is converted to the model's channels and size (from its
checkpoint: 28 x 28 grey for the reference MNIST model) by ddpm_edu.imageio: centre-cropped to a square, resized,
16-bit pixels scaled rather than clipped. For a model trained on MNIST-like data (white on black), a picture with
a light border is taken for dark-on-light ink and inverted (--invert overrides the guess). Every conversion is
said in one line on stdout. User errors are one line on stderr.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ddpm_edu.applications import MASK_SHAPES, denoise, estimate_sigma, inpaint, make_mask, sdedit
from ddpm_edu.checkpoint import load_model
from ddpm_edu.cli_common import CliError, float_in, non_negative_int, positive_int
from ddpm_edu.imageio import fit_image, read_picture, save_images
from ddpm_edu.utils import check_writable_file, pick_device

MIN_SIGMA = 0.01  # the least noise `denoise` removes when the estimate finds none
DARK_BACKGROUND_DATASETS = ("mnist-subset", "mnist", "fashion-mnist")  # white (bright) objects on black
LIGHT_BORDER = 0.75  # a border brighter than this (median, [0, 1]) is paper, not a dark background

sigma_type = float_in(0.0, 1.0, "a noise std in (0, 1] ([0, 1] pixel units)", low_open=True)
strength_type = float_in(0.0, 1.0, "a strength in [0, 1]")


def model_picture_format(config: dict) -> tuple[int, int, bool]:
    """(channels, image size, whether the model's data is bright on a dark background) from a checkpoint config."""
    model = config["model"]
    dark = config["data"].get("dataset", "") in DARK_BACKGROUND_DATASETS
    return int(model.get("in_channels", 1)), int(model.get("image_size", 28)), dark


def border_median(x: torch.Tensor) -> float:
    """Median of the outermost ring of pixels of an image (C, H, W) in [0, 1]."""
    ring = torch.cat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], dim=-1)
    return ring.median().item()


def read_image(path: str, config: dict, invert: str = "auto") -> tuple[torch.Tensor, tuple, str]:
    """IMAGE -> (tensor (1, C, S, S) in [-1, 1] in the model's format, original (width, height), one-line note)."""
    channels, size, dark_background = model_picture_format(config)
    pixels, notes = read_picture(path, "IMAGE")
    original = (pixels.shape[1], pixels.shape[0])
    x, fit_notes = fit_image(pixels, channels, size)
    notes += fit_notes
    light_border = border_median(x) > LIGHT_BORDER
    if invert == "yes" or (invert == "auto" and dark_background and channels == 1 and light_border):
        x = 1.0 - x
        notes.append("inverted (dark on light -> the model's bright on dark)" if invert == "auto" else "inverted")
    what = f"{size}x{size} {'grey' if channels == 1 else 'RGB'}"
    return x[None] * 2 - 1, original, f"read {path}: " + ("; ".join(notes) if notes else f"{what}, used as is")


def read_mask(path: str, image_size: tuple, config: dict) -> torch.Tensor:
    """MASK file -> bool tensor (1, 1, S, S) of the KNOWN pixels; white (>= 50%) in the file marks the pixels
    to fill in. The mask must have IMAGE's original size; it is cropped and resized as IMAGE is."""
    _, size, _ = model_picture_format(config)
    pixels, _ = read_picture(path, "--mask")
    if (pixels.shape[1], pixels.shape[0]) != image_size:
        raise CliError(f"--mask: {path} is {pixels.shape[1]}x{pixels.shape[0]} but IMAGE is "
                       f"{image_size[0]}x{image_size[1]}; they must have the same size")
    mask, _ = fit_image(pixels, 1, size, nearest=True)
    fill = mask[0] >= 0.5
    if not fill.any():
        raise CliError(f"--mask: {path} has no white pixels: nothing to fill in (white marks the pixels to fill)")
    if fill.all():
        raise CliError(f"--mask: {path} is all white: no known pixels to keep (use `sample` instead)")
    return ~fill[None, None]


def common_flags(p) -> None:
    p.add_argument("image", metavar="IMAGE", help="input picture (PNG or any format Pillow reads; any size or colour)")
    p.add_argument("--out", required=True, help="output .png (one picture, or a grid of several)")
    p.add_argument("--checkpoint", help="checkpoint folder (default: the shipped reference model)")
    p.add_argument("--invert", choices=("auto", "yes", "no"), default="auto",
                   help="invert IMAGE's grey values; auto: only for a grey MNIST-like model and a picture with a "
                        "light border (dark ink on paper)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_application_parsers(sub) -> None:
    """Register the `denoise`, `inpaint` and `sdedit` subcommands on an argparse subparsers object."""
    p = sub.add_parser("denoise", help="remove Gaussian noise from a picture (chapter 6)",
                       description="Denoise IMAGE with the diffusion model: map its noise level to a diffusion step "
                                   "and run the reverse process from there. IMAGE is first converted to the model's "
                                   "size and channels.")
    common_flags(p)
    p.add_argument("--sigma", type=sigma_type,
                   help="noise std in [0, 1] pixel units, in (0, 1], of IMAGE after its conversion to the model's "
                        "size (28x28 for the reference model; resizing a larger picture averages part of its noise "
                        "away) (default: estimated after the conversion)")
    p.add_argument("--steps", type=positive_int, default=5, help="reverse steps (DDIM)")
    p.add_argument("--samples", type=positive_int, default=1,
                   help="1: deterministic DDIM; N > 1: the mean of N stochastic (DDPM) posterior samples")
    p.set_defaults(func=run_denoise)

    p = sub.add_parser("inpaint", help="fill in the masked part of a picture (chapter 6)",
                       description="Fill in the pixels marked by --mask (white = fill in) or --mask-shape; the other "
                                   "pixels are kept exactly.")
    common_flags(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--mask", help="mask picture of IMAGE's size: white marks the pixels to fill in")
    which.add_argument("--mask-shape", choices=MASK_SHAPES, help="a built-in mask")
    p.add_argument("--method", choices=("replacement", "repaint"), default="repaint", help="inpainting method")
    p.add_argument("--steps", type=positive_int, default=20, help="reverse steps (DDPM)")
    p.add_argument("--jump-length", type=positive_int, default=5, help="RePaint: steps per jump back up")
    p.add_argument("--resample", type=positive_int, default=3, help="RePaint: times each stretch is walked")
    p.add_argument("--n", type=positive_int, default=1, help="number of fillings (more than 1: a grid)")
    p.set_defaults(func=run_inpaint)

    p = sub.add_parser("sdedit", help="turn a sketch or any picture into one like the training data (SDEdit, "
                                      "chapter 6)",
                       description="Noise IMAGE to t0 = strength * T and denoise it (SDEdit).")
    common_flags(p)
    p.add_argument("--strength", type=strength_type, required=True,
                   help="in [0, 1]: 0 returns the input, 1 ignores it; 0.3-0.6 keeps the layout")
    p.add_argument("--steps", type=positive_int, default=20, help="DDIM steps for strength 1 (scaled by strength)")
    p.add_argument("--n", type=positive_int, default=1, help="number of outputs (more than 1: a grid)")
    p.set_defaults(func=run_sdedit)


def prepare(args):
    """Check --out, read IMAGE in the model's format, load the model: (x, original size, model, schedule, config,
    keyword arguments every application passes to the reverse loop)."""
    out = check_writable_file(args.out, (".png",), "--out")
    device = pick_device(args.device)
    model, schedule, config = load_model(args.checkpoint, device=device)
    x, size, note = read_image(args.image, config, args.invert)
    print(note)
    loop = dict(generator=torch.Generator().manual_seed(args.seed), prediction_type=config["prediction_type"],
                progress=not args.no_progress)
    return out, x.to(device), size, model, schedule, config, loop


def finish(y: torch.Tensor, out: Path) -> int:
    save_images(y, out, nrow=min(8, len(y)))
    print(f"wrote {out}")
    return 0


def run_denoise(args) -> int:
    out, x, _, model, schedule, _, loop = prepare(args)
    sigma = args.sigma
    if sigma is None:
        sigma = estimate_sigma(x)
        print(f"estimated noise sigma = {sigma:.3f} (at the model's size)")
        if sigma > 1:
            raise CliError(f"estimated sigma {sigma:.3g} is above 1; pass --sigma")
        if sigma < MIN_SIGMA:
            sigma = MIN_SIGMA
            print(f"the image looks clean; denoising lightly with sigma = {MIN_SIGMA}")
    kw = dict(sampler="ddim") if args.samples == 1 else dict(sampler="ddpm", n_samples=args.samples)
    return finish(denoise(model, schedule, x, sigma, steps=args.steps, **kw, **loop), out)


def run_inpaint(args) -> int:
    out, x, size, model, schedule, config, loop = prepare(args)
    if args.mask:
        known = read_mask(args.mask, size, config)
    else:
        known = make_mask(args.mask_shape, size=x.shape[-1], generator=loop["generator"])
    print(f"filling {int((~known).sum())} of {known.numel()} pixels ({args.method})")
    y = inpaint(model, schedule, x.repeat(args.n, 1, 1, 1), known, method=args.method, steps=args.steps,
                jump_length=args.jump_length, resample=args.resample, **loop)
    return finish(y, out)


def run_sdedit(args) -> int:
    out, x, _, model, schedule, _, loop = prepare(args)
    return finish(sdedit(model, schedule, x.repeat(args.n, 1, 1, 1), args.strength, steps=args.steps, **loop), out)
