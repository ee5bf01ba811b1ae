"""Images on disk (plumbing, not generated): reading any picture Pillow opens into the model's channels and size,
and writing samples as PNG grids or NumPy arrays, atomically.

Pictures are read as float32 arrays in [0, 1]: 8-bit images divided by 255, 16-bit ones by 65535 (not clipped
to 8 bits), transparent pixels composited on white. `fit_image` converts to grey or RGB, resizes the shorter
side and centre-crops a square, the same way for a training folder (`ddpm_edu.data`) and for the applications'
inputs (`python -m ddpm_edu denoise | inpaint | sdedit`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ddpm_edu.plotting import image_grid
from ddpm_edu.utils import atomic_replace

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601 weights, as Pillow's convert("L")


class ImageReadError(ValueError):
    """A picture that cannot be used; the message names the argument and the file."""


def read_picture(path: str | Path, what: str = "image") -> tuple[np.ndarray, list[str]]:
    """Read an image file as a float32 array (H, W, 1) or (H, W, 3) in [0, 1]; returns (array, notes), the notes
    saying what was converted. Raises ImageReadError (naming `what`) for a missing, unreadable or huge file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            opened.load()
            image = opened.copy()
    except FileNotFoundError:
        raise ImageReadError(f"{what}: no such file: {path}") from None
    except Image.DecompressionBombError:
        raise ImageReadError(f"{what}: {path} has more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, Pillow's limit "
                             f"against decompression bombs; shrink it first") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise ImageReadError(f"{what}: cannot read {path} as an image ({type(e).__name__})") from None
    return picture_to_array(image)


def picture_to_array(image) -> tuple[np.ndarray, list[str]]:
    """A Pillow image -> (float32 array (H, W, 1) or (H, W, 3) in [0, 1], notes on what was converted)."""
    from PIL import Image

    notes = []
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        pixels = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if image.mode != "I" or pixels.max() > 255 else 255.0
        notes.append(f"{'16' if scale > 255 else '8'}-bit grey ({image.mode}) scaled to [0, 1]")
        return np.clip(pixels / scale, 0, 1).astype(np.float32)[..., None], notes
    if image.mode == "F":
        notes.append("32-bit float grey clipped to [0, 1]")
        return np.clip(np.asarray(image, dtype=np.float32), 0, 1)[..., None], notes
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
        notes.append("transparent pixels made white")
    if image.mode in ("1", "L", "P") and not (image.mode == "P" and image.getpalette() and _palette_has_colour(image)):
        image = image.convert("L")
    elif image.mode != "RGB":
        notes.append(f"{image.mode} converted to RGB")
        image = image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return (pixels[..., None] if pixels.ndim == 2 else pixels), notes


def _palette_has_colour(image) -> bool:
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    return bool((rgb.max(-1) != rgb.min(-1)).any())


def to_channels(pixels: np.ndarray, channels: int) -> tuple[np.ndarray, list[str]]:
    """(H, W, 1 or 3) -> (H, W, channels): RGB to grey by luma, grey to RGB by repeating."""
    if pixels.shape[-1] == channels:
        return pixels, []
    if channels == 1:
        return (pixels @ np.asarray(LUMA, dtype=np.float32))[..., None], ["colour converted to grey"]
    if channels == 3:
        return np.repeat(pixels, 3, axis=-1), ["grey repeated to RGB"]
    raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")


def square_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the central square of an H x W image."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def fit_image(pixels: np.ndarray, channels: int, size: int, nearest: bool = False) -> tuple[torch.Tensor, list[str]]:
    """(H, W, C) in [0, 1] -> tensor (channels, size, size) in [0, 1]: converted to `channels`, centre-cropped to a
    square, resized (antialiased bicubic; `nearest` for masks). Returns (tensor, notes)."""
    pixels, notes = to_channels(pixels, channels)
    height, width = pixels.shape[:2]
    top, left, side = square_crop_box(height, width)
    if side != height or side != width:
        notes.append(f"centre-cropped {width}x{height} to {side}x{side}")
    x = torch.from_numpy(np.ascontiguousarray(pixels[top:top + side, left:left + side])).permute(2, 0, 1)[None]
    if side != size:
        if nearest:
            x = F.interpolate(x, size=(size, size), mode="nearest")
        else:
            x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True).clamp(0, 1)
        notes.append(f"resized {side}x{side} to {size}x{size}")
    return x[0].float(), notes


# ------------------------------------------------------------------------------------------------ writing
def to_unit_array(images: torch.Tensor) -> np.ndarray:
    """Model tensors (N, C, H, W) in [-1, 1] -> float32 array (N, H, W) or (N, H, W, C) in [0, 1]."""
    x = ((images.detach().float().cpu() + 1) / 2).clamp(0, 1).numpy()
    x = np.transpose(x, (0, 2, 3, 1))
    return x[..., 0] if x.shape[-1] == 1 else x


def save_array(images: torch.Tensor, path: str | Path) -> None:
    """Save model tensors as a float32 .npy array (N, H, W) or (N, H, W, C) in [0, 1], atomically."""
    arr = to_unit_array(images).astype(np.float32)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.save(f, arr)

    atomic_replace(write, path)


def save_images(images: torch.Tensor, path: str | Path, nrow: int = 8) -> None:
    """Save model tensors (N, C, H, W) in [-1, 1] as a PNG: one image as itself, several as a grid; atomically."""
    from PIL import Image

    if len(images) == 1:
        pixels = to_unit_array(images)[0]
    else:
        pixels = image_grid(images, nrow=nrow)
    png = (pixels * 255).round().astype(np.uint8)
    atomic_replace(lambda tmp: Image.fromarray(png).save(tmp, format="PNG"), path)
