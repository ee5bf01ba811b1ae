"""The applications on the command line: `python -m ddpm_edu denoise | inpaint | sdedit IMAGE --out OUT.png`
(plumbing, not generated; the methods are ddpm_edu.applications, chapter 6).

Any PNG (or other image Pillow reads), of any size and colour, is converted to the model's 28 x 28 grey, white
digit on black; every conversion is said in one line on stdout. User errors are one line on stderr (CliError).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddpm_edu.cli_common import CliError, float_in, non_negative_int, positive_int
from ddpm_edu.imageio import save_images

IMAGE_SIZE = 28
MIN_SIGMA = 0.01  # the least noise `denoise` removes when the estimate finds none


_sigma = float_in(0.0, 1.0, "a noise std in (0, 1] ([0, 1] pixel units)", low_open=True)
_strength = float_in(0.0, 1.0, "a strength in [0, 1]")


def _open_grey(path: str, what: str):
    """Open an image file as a Pillow 'L' image (alpha composited on white); returns (image, notes)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except FileNotFoundError:
        raise CliError(f"{what}: no such file: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise CliError(f"{what}: cannot read {path} as an image ({type(e).__name__})") from None
    notes = []
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
        notes.append("transparent pixels made white")
    if image.mode != "L":
        notes.append(f"{image.mode} converted to grey")
        image = image.convert("L")
    return image, notes


def read_image(path: str) -> tuple:
    """IMAGE -> (tensor (1, 1, 28, 28) in [-1, 1], original (width, height), one-line description)."""
    import torch
    from PIL import Image

    image, notes = _open_grey(path, "IMAGE")
    size = image.size
    if size != (IMAGE_SIZE, IMAGE_SIZE):
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
        notes.append(f"resized {size[0]}x{size[1]} to {IMAGE_SIZE}x{IMAGE_SIZE}")
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    if pixels.mean() > 0.5:
        pixels = 1.0 - pixels
        notes.append("inverted (dark on light -> MNIST's white digit on black)")
    x = torch.from_numpy(pixels.copy())[None, None] * 2 - 1
    return x, size, f"read {path}: " + ("; ".join(notes) if notes else "28x28 grey, used as is")


def read_mask(path: str, image_size: tuple) -> "torch.Tensor":
    """MASK file -> bool tensor (1, 1, 28, 28) of the KNOWN pixels; white (>= 50%) in the file marks the pixels
    to fill in. The mask must have IMAGE's original size."""
    import torch
    from PIL import Image

    mask, _ = _open_grey(path, "--mask")
    if mask.size != image_size:
        raise CliError(f"--mask: {path} is {mask.size[0]}x{mask.size[1]} but IMAGE is {image_size[0]}x{image_size[1]};"
                       f" they must have the same size")
    if mask.size != (IMAGE_SIZE, IMAGE_SIZE):
        mask = mask.resize((IMAGE_SIZE, IMAGE_SIZE), Image.NEAREST)
    fill = np.asarray(mask) >= 128
    if not fill.any():
        raise CliError(f"--mask: {path} has no white pixels: nothing to fill in (white marks the pixels to fill)")
    if fill.all():
        raise CliError(f"--mask: {path} is all white: no known pixels to keep (use `sample` instead)")
    return torch.from_numpy(~fill)[None, None]


def save_png(images, path: Path) -> None:
    """One image (1, 1, H, W) as a plain H x W grey PNG, several as a grid; written atomically."""
    save_images(images, path, nrow=min(8, len(images)))


def _common(p) -> None:
    p.add_argument("image", metavar="IMAGE", help="input image (PNG or any format Pillow reads; any size or colour)")
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    p.add_argument("--checkpoint", default=None, help="checkpoint folder (default: the shipped reference model)")


def add_application_parsers(sub) -> None:
    """Register the `denoise`, `inpaint` and `sdedit` subcommands on an argparse subparsers object."""
    p = sub.add_parser("denoise", help="remove Gaussian noise from an image (chapter 6)",
                       description="Denoise IMAGE with the diffusion model: map its noise level to a diffusion step "
                                   "and run the reverse process from there.")
    _common(p)
    p.add_argument("--sigma", type=_sigma, default=None,
                   help="noise std in [0, 1] pixel units, in (0, 1] (default: estimated from the image)")
    p.add_argument("--steps", type=positive_int, default=5, help="reverse steps (DDIM)")
    p.add_argument("--samples", type=positive_int, default=1,
                   help="1: deterministic DDIM; N > 1: the mean of N stochastic (DDPM) posterior samples")
    p.set_defaults(func=run_denoise)

    p = sub.add_parser("inpaint", help="fill in the masked part of an image (chapter 6)",
                       description="Fill in the pixels marked by --mask (white = fill in) or --mask-shape; the other "
                                   "pixels are kept exactly.")
    _common(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--mask", help="mask image of IMAGE's size: white marks the pixels to fill in")
    which.add_argument("--mask-shape", choices=("box", "half", "strokes"), help="a built-in mask")
    p.add_argument("--method", choices=("replacement", "repaint"), default="repaint", help="inpainting method")
    p.add_argument("--steps", type=positive_int, default=20, help="reverse steps (DDPM)")
    p.add_argument("--jump-length", type=positive_int, default=5, help="RePaint: steps per jump back up")
    p.add_argument("--resample", type=positive_int, default=3, help="RePaint: times each stretch is walked")
    p.add_argument("--n", type=positive_int, default=1, help="number of fillings (more than 1: a grid)")
    p.set_defaults(func=run_inpaint)

    p = sub.add_parser("sdedit", help="turn a sketch or any image into a digit (SDEdit, chapter 6)",
                       description="Noise IMAGE to t0 = strength * T and denoise it (SDEdit).")
    _common(p)
    p.add_argument("--strength", type=_strength, required=True,
                   help="in [0, 1]: 0 returns the input, 1 ignores it; 0.3-0.6 keeps the layout")
    p.add_argument("--steps", type=positive_int, default=20, help="DDIM steps for strength 1 (scaled by strength)")
    p.add_argument("--n", type=positive_int, default=1, help="number of outputs (more than 1: a grid)")
    p.set_defaults(func=run_sdedit)


def _load(args, out: Path):
    if out.suffix.lower() != ".png":
        raise CliError(f"--out must end in .png, got {out.name!r}")
    import torch

    from ddpm_edu.checkpoint import load_model

    x, size, note = read_image(args.image)
    print(note)
    model, schedule, config = load_model(args.checkpoint)
    return x, size, model, schedule, config["prediction_type"], torch.Generator().manual_seed(args.seed)


def run_denoise(args) -> int:
    from ddpm_edu.applications import denoise, estimate_sigma

    out = Path(args.out)
    x, _, model, schedule, prediction_type, g = _load(args, out)
    sigma = args.sigma
    if sigma is None:
        sigma = estimate_sigma(x)
        print(f"estimated noise sigma = {sigma:.3f}")
        if sigma > 1:
            raise CliError(f"estimated sigma {sigma:.3g} is above 1; pass --sigma")
        if sigma < MIN_SIGMA:
            sigma = MIN_SIGMA
            print(f"the image looks clean; denoising lightly with sigma = {MIN_SIGMA}")
    kw = dict(sampler="ddim") if args.samples == 1 else dict(sampler="ddpm", n_samples=args.samples)
    y = denoise(model, schedule, x, sigma, steps=args.steps, generator=g, prediction_type=prediction_type, **kw)
    save_png(y, out)
    print(f"wrote {out}")
    return 0


def run_inpaint(args) -> int:
    from ddpm_edu.applications import inpaint, make_mask

    out = Path(args.out)
    x, size, model, schedule, prediction_type, g = _load(args, out)
    known = read_mask(args.mask, size) if args.mask else make_mask(args.mask_shape, generator=g)
    print(f"filling {int((~known).sum())} of {known.numel()} pixels ({args.method})")
    y = inpaint(model, schedule, x.repeat(args.n, 1, 1, 1), known, method=args.method, steps=args.steps,
                jump_length=args.jump_length, resample=args.resample, generator=g, prediction_type=prediction_type)
    save_png(y, out)
    print(f"wrote {out}")
    return 0


def run_sdedit(args) -> int:
    from ddpm_edu.applications import sdedit

    out = Path(args.out)
    x, _, model, schedule, prediction_type, g = _load(args, out)
    y = sdedit(model, schedule, x.repeat(args.n, 1, 1, 1), args.strength, steps=args.steps, generator=g,
               prediction_type=prediction_type)
    save_png(y, out)
    print(f"wrote {out}")
    return 0
