"""Train the digit classifier whose features the FID of chapter 5 uses, and write it into the package.

    python benchmarks/train_classifier.py            # 3-10 minutes on a 2-core CPU

Writes ddpm_edu/pretrained/mnist_classifier.safetensors (weights, float32, ~370 KB) and mnist_classifier.json
(configuration, accuracies, training settings). Deterministic for a given seed, torch version and thread count.
"""

import argparse
import platform
import time
from pathlib import Path

import torch

from ddpm_edu.checkpoint import write_json, write_safetensors
from ddpm_edu.metrics import CLASSIFIER_FILE, train_classifier

OUT = Path(__file__).resolve().parent.parent / "ddpm_edu" / "pretrained"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(2)
    start = time.time()
    model, info = train_classifier(epochs=args.epochs, seed=args.seed)
    info.update(seconds=round(time.time() - start, 1), torch=torch.__version__, machine=platform.processor() or
                platform.machine(), command="python benchmarks/train_classifier.py")
    write_safetensors(model.state_dict(), args.out / f"{CLASSIFIER_FILE}.safetensors")
    write_json(info, args.out / f"{CLASSIFIER_FILE}.json")
    print(f"held-out accuracy {info['heldout_accuracy']:.4f}, train accuracy {info['train_accuracy']:.4f}, "
          f"{info['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
