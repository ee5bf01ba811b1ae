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
import os
import tempfile
from importlib import resources
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

import ddpm_edu

FORMAT = "ddpm_edu.checkpoint/1"
REFERENCE_MODEL = "mnist_default"


def _atomic_replace(write, path: Path) -> None:
    """Call write(tmp_path), then rename tmp_path to path (same folder, so the rename is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give it the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json(obj: dict, path: str | Path) -> None:
    """Write `obj` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True) + "\n"

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    _atomic_replace(write, Path(path))


def write_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> None:
    """Save tensors (made contiguous, on the CPU) with optional JSON metadata, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    meta = {"json": json.dumps(metadata)} if metadata is not None else None
    _atomic_replace(lambda tmp: save_file(tensors, tmp, metadata=meta), Path(path))


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """Load tensors and the JSON metadata written by `write_safetensors` (no pickle involved)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = f.metadata() or {}
    return tensors, (json.loads(meta["json"]) if "json" in meta else None)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DistributedDataParallel and torch.compile wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def model_tensors(model: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in _unwrap(model).state_dict().items()}


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
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint in {folder} (config.json is missing)")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if config.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} checkpoint (format={config.get('format')!r})")
    return config


def load_training_state(folder: str | Path, model: torch.nn.Module, ema_model: torch.nn.Module | None,
                        optimizer: torch.optim.Optimizer, generators: dict) -> dict:
    """Restore raw weights, EMA, optimizer and generators from state.safetensors; return its extra state."""
    tensors, meta = read_safetensors(Path(folder) / "state.safetensors")
    _unwrap(model).load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema_model is not None:
        ema_model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    optimizer_from_tensors(optimizer, tensors, meta["optimizer"])
    for name, gen in generators.items():
        gen.set_state(tensors[f"rng.{name}"])
    return {"step": meta["step"], **meta["extra"]}


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
    from ddpm_edu.schedules import make_schedule
    from ddpm_edu.unet import make_model

    folder = reference_model_path() if path is None else Path(path)
    if folder.is_file() and folder.name in ("config.json", "model.safetensors", "state.safetensors"):
        folder = folder.parent
    config = read_config(folder)
    model = make_model(config["model"])
    if weights == "ema":
        tensors, _ = read_safetensors(folder / "model.safetensors")
    elif (folder / "raw_model.safetensors").is_file():
        tensors, _ = read_safetensors(folder / "raw_model.safetensors")
    else:
        state, _ = read_safetensors(folder / "state.safetensors")
        tensors = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    model.load_state_dict(tensors)
    schedule = make_schedule(**config["schedule"])
    return model.to(device).eval(), schedule, config
