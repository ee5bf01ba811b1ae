"""ddpm_edu.metrics: the shipped classifier, the Fréchet distance with a custom feature module, calibration,
memorization check."""

import json

import pytest
import torch

from ddpm_edu.data import load_dataset
from ddpm_edu.metrics import (CALIBRATION_SETS, ClassifierFeatures, DigitClassifier, accuracy, calibration,
                              calibration_sets, classifier_path, classifier_scores, format_report, frechet_distance,
                              gaussian_blur, load_classifier, memorization_check, nearest_train_distance,
                              quality_report, train_classifier)


@pytest.fixture(scope="module")
def heldout():
    """The held-out split, shuffled (it is stored sorted by digit)."""
    data = load_dataset("mnist-subset", "heldout")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    data.images, data.labels = data.images[order], data.labels[order]
    return data


@pytest.fixture(scope="module")
def train_images():
    data = load_dataset("mnist-subset", "train")
    return data.images[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))]


def test_shipped_classifier_is_small_documented_and_accurate(heldout):
    path = classifier_path()
    assert path.is_file() and path.stat().st_size < 1_000_000
    info = json.loads(path.with_suffix(".json").read_text())
    assert info["heldout_accuracy"] >= 0.97 and set(info["config"]) >= {"channels", "num_features"}
    clf = load_classifier()
    assert not clf.training
    assert abs(accuracy(clf, heldout.images, heldout.labels) - info["heldout_accuracy"]) < 1e-6


def test_feature_module_stays_in_eval_mode_inside_the_metric(heldout):
    from torchmetrics.image.fid import FrechetInceptionDistance

    features = ClassifierFeatures(load_classifier())
    metric = FrechetInceptionDistance(feature=features, normalize=True)
    images = (heldout.images[:16] + 1) / 2
    before = features(images)
    metric.train()
    assert not features.training and not features.classifier.training
    assert torch.equal(before, features(images))
    assert before.shape == (16, features.num_features)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(2, 1, 28, 28, dtype=torch.uint8), "must be float"),
    (torch.zeros(2, 3, 28, 28), "must be float"),
    (torch.full((2, 1, 28, 28), -0.5), r"must lie in \[0, 1\]"),
])
def test_feature_module_states_its_input_contract(bad, match):
    with pytest.raises(ValueError, match=match):
        ClassifierFeatures(load_classifier())(bad)


def test_calibration_is_ordered_and_cached():
    calib = calibration(200)
    fid = [calib[name]["fid"] for name in CALIBRATION_SETS]
    assert fid[0] < fid[1] and fid[0] < fid[2] and max(fid[:3]) < fid[3]
    real, noise = calib[CALIBRATION_SETS[0]], calib[CALIBRATION_SETS[3]]
    assert real["coverage"] == 1.0 and real["confidence"] > 0.95
    assert noise["coverage"] <= 0.2  # noise is (confidently!) called one or two digits: confidence alone misleads
    assert calibration(200) is calib


def test_frechet_distance_of_a_set_to_itself_is_small_and_noise_is_far(train_images):
    train = train_images
    assert frechet_distance(train) == pytest.approx(0.0, abs=1e-2)
    noise = torch.randn(300, 1, 28, 28, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)
    assert frechet_distance(noise) > 10 * frechet_distance(train[:300])


def test_classifier_scores_on_real_digits(heldout):
    scores = classifier_scores(heldout.images[:300])
    assert scores["coverage"] == 1.0 and scores["confidence"] > 0.95
    assert sum(scores["histogram"]) == 300 and len(scores["histogram"]) == 10
    ones = heldout.images[heldout.labels == 1][:20]
    assert classifier_scores(ones)["coverage"] <= 0.3


def test_nearest_train_distance_and_memorization(heldout, train_images):
    train = train_images
    assert torch.allclose(nearest_train_distance(train[:10]), torch.zeros(10, dtype=torch.float64), atol=1e-6)
    assert (nearest_train_distance(heldout.images[:10]) > 1.0).all()
    copies = memorization_check(train[:50])
    assert copies["fraction_below"] == 1.0 and copies["samples_median"] < 1e-6
    fresh = memorization_check(heldout.images[:200])
    assert fresh["fraction_below"] < 0.05
    assert fresh["samples_median"] == pytest.approx(fresh["heldout_median"], rel=0.1)


def test_quality_report_lists_samples_beside_calibration(heldout):
    report = quality_report(heldout.images[:100], name="test images")
    assert list(report) == ["test images", *CALIBRATION_SETS]
    assert all(row["n"] == 100 for row in report.values())
    text = format_report(report)
    assert "test images" in text and "pure noise (ceiling)" in text and len(text.splitlines()) == 6


def test_gaussian_blur_keeps_constants_and_the_mean():
    flat = torch.full((2, 1, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(flat, 1.0), flat)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    blurred = gaussian_blur(x, 1.0)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    assert blurred.mean().item() == pytest.approx(x.mean().item(), abs=0.02)


def test_train_classifier_briefly():
    model, info = train_classifier(epochs=8, limit=400, lr=3e-3)  # a short run on a fixed subset of all ten digits
    assert isinstance(model, DigitClassifier) and not model.training
    assert info["train_images"] == 400 and info["train_accuracy"] > 0.6  # chance is 0.1


@pytest.mark.parametrize("call, match", [
    (lambda: frechet_distance(torch.zeros(10, 1, 32, 32)), r"samples must be a tensor \(N, 1, 28, 28\)"),
    (lambda: frechet_distance(torch.zeros(1, 1, 28, 28)), "at least 2 images"),
    (lambda: calibration_sets(5000), r"n must be an int in \[2, 1000\]"),
])
def test_clear_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_missing_weights_name_the_script(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_classifier.py"):
        load_classifier(str(tmp_path / "nope.safetensors"))


# ---- intervals and verdicts ----

def test_fid_interval_agrees_with_torchmetrics_and_is_reproducible():
    from ddpm_edu.metrics import CALIBRATION_SETS, calibration_sets, fid_interval, frechet_distance

    x = calibration_sets(60)[CALIBRATION_SETS[2]]  # noisy held-out digits
    a, b = fid_interval(x, boot=30), fid_interval(x, boot=30)
    assert abs(a["fid"] - frechet_distance(x)) < 1e-3 * frechet_distance(x)
    assert a == b and a["ci"][0] < a["fid"] < a["ci"][1] and a["n"] == 60
    assert abs((a["ci"][1] - a["ci"][0]) / 2 - 1.96 * a["boot_sd"]) < 1e-9


def test_fid_interval_refuses_too_few_resamplings():
    from ddpm_edu.metrics import CALIBRATION_SETS, calibration_sets, fid_interval

    with pytest.raises(ValueError, match="boot must be an int >= 20"):
        fid_interval(calibration_sets(10)[CALIBRATION_SETS[0]], boot=5)


def test_verdict_says_better_only_when_intervals_separate():
    from ddpm_edu.metrics import verdict

    low, high = {"fid": 2.0, "ci": [1.0, 3.0]}, {"fid": 5.0, "ci": [4.0, 6.0]}
    assert verdict("A", low, "B", high).startswith("A is better than B")
    assert verdict("A", high, "B", low).startswith("B is better than A")
    touching = {"fid": 3.5, "ci": [2.5, 4.5]}
    assert "within noise" in verdict("A", low, "B", touching)
    with pytest.raises(ValueError, match="B: a cell needs"):
        verdict("A", low, "B", {"fid": 3.0})
    with pytest.raises(ValueError, match="B: a cell needs"):
        verdict("A", low, "B", None)


def test_frechet_from_stats_of_identical_gaussians_is_zero_and_grows_with_the_mean_gap():
    from ddpm_edu.metrics import frechet_from_stats

    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 8, generator=g, dtype=torch.float64)
    cov = a @ a.T + torch.eye(8, dtype=torch.float64)
    mu = torch.zeros(8, dtype=torch.float64)
    assert abs(frechet_from_stats(mu, cov, mu, cov)) < 1e-8
    assert abs(frechet_from_stats(mu, cov, mu + 1, cov) - 8.0) < 1e-8
