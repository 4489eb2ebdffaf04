"""The evaluation report against scikit-learn (a test oracle only) and hand-computed cases."""

import pytest
import torch
from sklearn.metrics import (
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from models.evaluation import calibration, classification_report, most_confidently_wrong

CLASSES = ["cat", "dog", "owl", "eel", "ant", "bee", "cow", "elk"]  # more than the top 5


def _predictions(seed: int, count: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, len(CLASSES), (count,), generator=generator)
    logits = torch.randn(count, len(CLASSES), generator=generator)
    logits[torch.arange(count), labels] += 1.0  # better than chance, not perfect
    return logits.softmax(dim=1), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_report_agrees_with_scikit_learn(seed):
    probabilities, labels = _predictions(seed)
    predicted = probabilities.argmax(dim=1).numpy()
    report = classification_report(probabilities, labels, CLASSES)
    precision, recall, f1, support = precision_recall_fscore_support(
        labels.numpy(), predicted, labels=range(len(CLASSES)), zero_division=0
    )
    for i, row in enumerate(report["per_class"]):
        assert row["class"] == CLASSES[i]
        assert row["precision"] == pytest.approx(precision[i])
        assert row["recall"] == pytest.approx(recall[i])
        assert row["f1"] == pytest.approx(f1[i])
        assert row["support"] == support[i]
    assert report["macro_f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))
    assert report["weighted_f1"] == pytest.approx(f1_score(labels, predicted, average="weighted"))
    assert report["confusion_matrix"]["counts"] == confusion_matrix(labels, predicted).tolist()
    assert report["confusion_matrix"]["classes"] == CLASSES
    assert report["top_k"] == 5
    top_5 = top_k_accuracy_score(labels, probabilities.numpy(), k=5, labels=range(len(CLASSES)))
    assert report["top_k_accuracy"] == pytest.approx(top_5)
    assert report["accuracy"] < top_5 < 1
    assert report["accuracy"] == pytest.approx((predicted == labels.numpy()).mean())


def test_a_class_never_predicted_has_zero_precision_not_an_error():
    probabilities = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    labels = torch.tensor([0, 1, 1])
    report = classification_report(probabilities, labels, ["a", "b"])
    assert report["per_class"][1] == {
        "class": "b",
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 2,
    }
    assert report["per_class"][0]["precision"] == pytest.approx(1 / 3)


def test_calibration_by_hand():
    """Two examples at 0.95 (one right), two at 0.65 (both right): ECE = (0.5*|0.95-0.5| +
    0.5*|0.65-1|) = 0.4; a confidence of exactly 1 falls in the last bin."""
    probabilities = torch.tensor([[0.95, 0.05], [0.95, 0.05], [0.65, 0.35], [0.35, 0.65]])
    labels = torch.tensor([0, 1, 0, 1])
    figures = calibration(probabilities, labels)
    assert figures["expected_calibration_error"] == pytest.approx(0.4)
    bins = figures["bins"]
    assert bins[9]["count"] == 2 and bins[9]["accuracy"] == 0.5
    assert bins[6]["count"] == 2 and bins[6]["confidence"] == pytest.approx(0.65)
    sure = calibration(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert sure["bins"][9]["count"] == 1 and sure["expected_calibration_error"] == 0


def test_the_most_confidently_wrong_come_first_with_their_dataset_positions():
    probabilities = torch.tensor([[0.6, 0.4], [0.1, 0.9], [0.99, 0.01], [0.3, 0.7]])
    labels = torch.tensor([1, 0, 1, 1])
    positions = torch.tensor([10, 11, 12, 13])
    worst = most_confidently_wrong(probabilities, labels, ["a", "b"], positions, count=2)
    assert [w["index"] for w in worst] == [12, 11]
    assert worst[0] == {"index": 12, "label": "b", "predicted": "a", "probability": 0.99}
