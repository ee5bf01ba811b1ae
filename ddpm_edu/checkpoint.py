"""Checkpoints: safetensors weights plus a JSON config, written atomically, loaded without pickle (not generated).

A checkpoint folder holds

* ``config.json``        the model, schedule and training configuration, data split, package version, step;
* ``model.safetensors``  the weights used for sampling (the EMA weights when training kept an EMA);
* ``state.safetensors``  everything ``--resume`` needs: raw weights, EMA, optimizer moments, random-generator
                         states; its non-tensor parts live in the file's string metadata as JSON.

Every file is written to a temporary name in the same folder and renamed into place, so a run killed at any
moment leaves either the previous complete checkpoint or the new one, never half a file.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

import ddpm_edu
from ddpm_edu.models import make_model
from ddpm_edu.schedules import make_schedule
from ddpm_edu.utils import atomic_replace, remove_stale_temporaries, unwrap_model

FORMAT = "ddpm_edu.checkpoint/1"
REFERENCE_MODEL = "mnist_default"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (damaged, incomplete, inconsistent); the message names the file."""


CHECKPOINT_FILES = ("config.json", "model.safetensors", "state.safetensors")
REQUIRED_KEYS = {"model": dict, "schedule": dict, "prediction_type": str, "data": dict}


def write_json(obj: dict, path: str | Path) -> None:
    """Write `obj` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_replace(write, Path(path))


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    """Save tensors (made contiguous, on the CPU) with optional JSON metadata, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"json": json.dumps(metadata)} if metadata is not None else None
    atomic_replace(lambda tmp: save_file(tensors, tmp, metadata=meta), Path(path))


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Load tensors and the JSON metadata written by `write_safetensors` (no pickle involved)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
        return tensors, (json.loads(meta["json"]) if "json" in meta else None)
    except (SafetensorError, OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path} is damaged or not a safetensors file ({reason})") from None


def model_tensors(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in unwrap_model(model).state_dict().items()}


def optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state dict into tensors and JSON-able parts."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for name, value in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: str | Path, config: dict, model: torch.nn.Module, ema_model: torch.nn.Module | None,
                    optimizer: torch.optim.Optimizer | None = None, generators: dict | None = None,
                    extra_state: dict | None = None) -> Path:
    """Write config.json, model.safetensors (EMA weights if given) and, with an optimizer, state.safetensors."""
    folder = Path(folder)
    remove_stale_temporaries(folder, CHECKPOINT_FILES)  # left by a run that was killed while writing
    config = {**config, "format": FORMAT, "package_version": ddpm_edu.__version__}
    sampling_model = ema_model if ema_model is not None else model
    if optimizer is not None:
        tensors = model_tensors(model, "model.")
        if ema_model is not None:
            tensors.update(model_tensors(ema_model, "ema."))
        optim_tensors, optim_meta = optimizer_to_tensors(optimizer)
        tensors.update(optim_tensors)
        for name, gen in (generators or {}).items():
            tensors[f"rng.{name}"] = gen.get_state()
        write_safetensors(tensors, folder / "state.safetensors",
                          {"optimizer": optim_meta, "extra": extra_state or {}, "step": config.get("step")})
    write_safetensors(model_tensors(sampling_model), folder / "model.safetensors", {"step": config.get("step")})
    write_json(config, folder / "config.json")  # last: a folder with config.json is complete
    return folder


def read_config(folder: str | Path) -> dict:
    """The checkpoint's config.json, checked to be a ddpm_edu checkpoint with every part `load_model` needs."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {folder} (config.json is missing)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got a {type(config).__name__}")
    if config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint (format={config.get('format')!r})")
    for key, kind in REQUIRED_KEYS.items():
        if not isinstance(config.get(key), kind):
            what = "lacks" if key not in config else f"has a {type(config[key]).__name__} as"
            raise CheckpointError(f"{path} {what} '{key}' (expected a JSON {'object' if kind is dict else 'string'})")
    return config


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    """Load a state dict into `model`; a CheckpointError naming `source` if the tensors do not fit the model."""
    try:
        unwrap_model(model).load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise CheckpointError(f"{source} does not match the model in config.json ({first})") from None


def load_training_state(folder: str | Path, model: torch.nn.Module, ema_model: torch.nn.Module | None,
                        optimizer: torch.optim.Optimizer, generators: dict) -> dict:
    """Restore raw weights, EMA, optimizer and the named generators from state.safetensors; return its extra state,
    with the saved generator states (CPU byte tensors) under "rng", for a caller that restores them itself."""
    path = Path(folder) / "state.safetensors"
    tensors, meta = read_safetensors(path)
    load_weights(model, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, path)
    if ema_model is not None:
        load_weights(ema_model, {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, path)
    try:
        optimizer_from_tensors(optimizer, tensors, meta["optimizer"])
        for name, gen in generators.items():
            gen.set_state(tensors[f"rng.{name}"])
        rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
        return {"step": meta["step"], **meta["extra"], "rng": rng}
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is incomplete: cannot restore the training state ({type(e).__name__}: {e})") \
            from None


def reference_model_path() -> Path:
    """Folder of the reference MNIST model shipped inside the package."""
    return Path(str(resources.files("ddpm_edu") / "pretrained" / REFERENCE_MODEL))


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu", weights: str = "ema"):
    """Load a checkpoint folder for sampling: returns (model in eval mode, NoiseSchedule, config dict).

    path None loads the reference MNIST model shipped with the package. weights: 'ema' (the averaged weights,
    model.safetensors) or 'raw' (the weights after the last optimizer step: raw_model.safetensors, or the
    "model." tensors of state.safetensors).
    """
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    folder = reference_model_path() if path is None else Path(path)
    if folder.is_file() and folder.name in CHECKPOINT_FILES:
        folder = folder.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"no checkpoint folder {folder}")
    config = read_config(folder)
    model, schedule = build_from_config(config, folder)
    if weights == "ema":
        source = folder / "model.safetensors"
        tensors, _ = read_safetensors(source)
    elif (folder / "raw_model.safetensors").is_file():
        source = folder / "raw_model.safetensors"
        tensors, _ = read_safetensors(source)
    else:
        source = folder / "state.safetensors"
        state, _ = read_safetensors(source)
        tensors = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    load_weights(model, tensors, source)
    return model.to(device).eval(), schedule, config


def build_from_config(config: dict, folder: Path):
    """The (untrained) model and the schedule that a checked config.json describes."""
    try:
        schedule = make_schedule(**config["schedule"])
        model_config = dict(config["model"])
        model_config.setdefault("num_timesteps", schedule.T)  # checkpoints older than the field
        return make_model(model_config), schedule
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{folder / 'config.json'} describes no valid model or schedule ({e})") from None
