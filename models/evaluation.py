"""How good a classifier is on labelled examples: a report from its class probabilities.

Plain torch on (N, C) probabilities and N labels, so that training (the served epoch) and an
evaluation on new data compute the same figures the same way.
"""

import torch

TOP_K = 5  # the top-k accuracy reported (or the class count, if fewer)
CALIBRATION_BINS = 10  # equal-width confidence bins of the reliability diagram
WORST_EXAMPLES = 20  # the most confidently wrong examples an evaluation names


def classification_report(
    probabilities: torch.Tensor, labels: torch.Tensor, classes: list[str]
) -> dict:
    """Accuracy, top-k accuracy, per-class precision/recall/F1/support, macro and weighted
    F1, the confusion matrix (rows: true class, columns: predicted) and calibration."""
    predicted = probabilities.argmax(dim=1)
    confusion = confusion_matrix(labels, predicted, len(classes))
    per_class, macro_f1, weighted_f1 = _per_class(confusion, classes)
    k = min(TOP_K, len(classes))
    top_k = probabilities.topk(k, dim=1).indices
    return {
        "examples": len(labels),
        "accuracy": _share(int((predicted == labels).sum()), len(labels)),
        "top_k": k,
        "top_k_accuracy": _share(int((top_k == labels[:, None]).any(dim=1).sum()), len(labels)),
        "macro_f1": macro_f1,
        "weighted_f1": weighted_f1,
        "per_class": per_class,
        "confusion_matrix": {"classes": classes, "counts": confusion.tolist()},
        "calibration": calibration(probabilities, labels),
    }


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, classes: int) -> torch.Tensor:
    """counts[true, predicted]."""
    flat = torch.bincount(labels * classes + predicted, minlength=classes * classes)
    return flat.reshape(classes, classes)


def _per_class(confusion: torch.Tensor, classes: list[str]) -> tuple[list[dict], float, float]:
    """Each class's figures, and the macro and support-weighted means of F1. A ratio with
    nothing to divide by is 0, as scikit-learn's zero_division=0 has it."""
    true_positives = confusion.diag().double()
    support = confusion.sum(dim=1).double()
    predicted = confusion.sum(dim=0).double()
    precision = _ratio(true_positives, predicted)
    recall = _ratio(true_positives, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    rows = [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    ]
    weighted = float((f1 * support).sum() / support.sum()) if support.sum() else 0.0
    return rows, float(f1.mean()), weighted


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(denominator > 0, numerator / denominator.clamp_min(1e-300), 0.0)


def _share(count: int, total: int) -> float:
    return count / total if total else 0.0


def calibration(probabilities: torch.Tensor, labels: torch.Tensor) -> dict:
    """Expected calibration error over equal-width bins of the top probability, and each
    bin's count, mean confidence and accuracy (the reliability diagram)."""
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).double()
    # A confidence of exactly 1 belongs to the last bin, not to one past it.
    bins = (confidence.double() * CALIBRATION_BINS).long().clamp(max=CALIBRATION_BINS - 1)
    count = torch.bincount(bins, minlength=CALIBRATION_BINS).double()
    confidence_sum = torch.zeros(CALIBRATION_BINS, dtype=torch.float64)
    confidence_sum.index_add_(0, bins, confidence.double())
    correct_sum = torch.zeros(CALIBRATION_BINS, dtype=torch.float64).index_add_(0, bins, correct)
    mean_confidence = _ratio(confidence_sum, count)
    accuracy = _ratio(correct_sum, count)
    total = max(len(labels), 1)
    ece = float(((count / total) * (mean_confidence - accuracy).abs()).sum())
    return {
        "expected_calibration_error": ece,
        "bins": [
            {
                "lower": i / CALIBRATION_BINS,
                "upper": (i + 1) / CALIBRATION_BINS,
                "count": int(count[i]),
                "confidence": float(mean_confidence[i]),
                "accuracy": float(accuracy[i]),
            }
            for i in range(CALIBRATION_BINS)
        ],
    }


def most_confidently_wrong(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    positions: torch.Tensor,
    count: int = WORST_EXAMPLES,
) -> list[dict]:
    """The wrong answers given with the highest probability, most confident first: each
    example's position (`positions` maps a row to where the example lies in its dataset),
    true and predicted class."""
    confidence, predicted = probabilities.max(dim=1)
    wrong = (predicted != labels).nonzero().flatten()
    worst = wrong[confidence[wrong].argsort(descending=True)[:count]]
    return [
        {
            "index": int(positions[row]),
            "label": classes[int(labels[row])],
            "predicted": classes[int(predicted[row])],
            "probability": round(float(confidence[row]), 6),
        }
        for row in worst.tolist()
    ]
