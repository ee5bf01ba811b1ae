"""Train the noise-aware digit classifier that chapter 7's classifier guidance uses, and write it into the package.

    python tools/train_noisy_classifier.py            # 1-2 minutes on one CPU core

It classifies noisy digits x_t = sqrt(ab_t) x_0 + sqrt(1 - ab_t) eps at every step t of the reference model's
schedule (linear, T = 1000), trained on the bundled MNIST subset's train split with
`ddpm_edu.score.train_noisy_classifier`. Writes ddpm_edu/pretrained/noisy_mnist_classifier.safetensors (float32
weights, about 90 KB) and noisy_mnist_classifier.json (configuration, settings, held-out accuracy at a few steps,
hardware, time). Deterministic for a given seed, torch version and thread count.
"""

import argparse
import platform
import time
from pathlib import Path

import torch

from ddpm_edu.checkpoint import model_tensors, write_json, write_safetensors
from ddpm_edu.data import load_dataset
from ddpm_edu.schedules import make_schedule
from ddpm_edu.score import NOISY_CLASSIFIER_FILE, train_noisy_classifier

OUT = Path(__file__).resolve().parent.parent / "ddpm_edu" / "pretrained"
REPORT_STEPS = (0, 250, 500, 750, 999)


@torch.no_grad()
def heldout_accuracy(classifier, schedule, t: int, seed: int = 0) -> float:
    """Accuracy on the 1,000 held-out digits, noised to code step t (fixed noise)."""
    heldout = load_dataset("mnist-subset", "heldout")
    g = torch.Generator().manual_seed(seed)
    ab = schedule.alpha_bars[t].item()
    x_t = ab**0.5 * heldout.images + (1 - ab) ** 0.5 * torch.randn(heldout.images.shape, generator=g)
    logits = classifier(x_t, torch.full((len(x_t),), t))
    return (logits.argmax(1) == heldout.labels).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--channels", type=int, nargs=3, default=[16, 32, 32])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    schedule = make_schedule("linear", T=1000)
    train = load_dataset("mnist-subset", "train")
    start = time.time()
    classifier = train_noisy_classifier(schedule, train.images, train.labels, steps=args.steps,
                                        batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                                        channels=tuple(args.channels))
    seconds = time.time() - start
    accuracy = {str(t + 1): round(heldout_accuracy(classifier, schedule, t), 4) for t in REPORT_STEPS}
    options = f" --steps {args.steps} --batch-size {args.batch_size} --lr {args.lr} --seed {args.seed} " \
              f"--channels {' '.join(map(str, args.channels))} --threads {args.threads}"
    info = {"command": "python tools/train_noisy_classifier.py" + options, "config": classifier.config,
            "schedule": schedule.to_dict(), "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
            "seed": args.seed, "train_images": len(train), "heldout_accuracy_at_step": accuracy,
            "seconds": round(seconds, 1), "machine": platform.machine(), "threads": torch.get_num_threads(),
            "torch": torch.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    write_safetensors(model_tensors(classifier), args.out / f"{NOISY_CLASSIFIER_FILE}.safetensors")
    write_json(info, args.out / f"{NOISY_CLASSIFIER_FILE}.json")
    print(f"trained in {seconds:.0f} s; held-out accuracy by step: {accuracy}")


if __name__ == "__main__":
    main()
