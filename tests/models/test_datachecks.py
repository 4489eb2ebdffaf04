"""Data checks count exactly the duplicates and leaks a dataset was built with."""

import torch

from models.data import ImageData, TextData
from models.datachecks import data_checks


def _text_data(unique_train: int, duplicated: int, unique_test: int, leaked: int) -> TextData:
    train = [f"train sentence {i}" for i in range(unique_train)]
    train += train[:duplicated]  # copies of the first `duplicated`
    test = [f"test sentence {i}" for i in range(unique_test)] + train[100 : 100 + leaked]
    texts = train + test
    labels = torch.tensor([i % 2 for i in range(len(texts))])
    is_test = torch.tensor([False] * len(train) + [True] * len(test))
    return TextData(["neg", "pos"], labels, is_test, "csv", texts=texts)


def test_fifty_duplicates_and_twenty_leaks_are_counted_exactly():
    checks = data_checks(_text_data(300, 50, 80, 20))
    assert checks["duplicates"]["train"]["count"] == 50
    assert checks["duplicates"]["test"]["count"] == 0
    assert checks["leakage"]["count"] == 20
    first_leak = checks["leakage"]["examples"][0]
    assert first_leak == {"index": 350 + 80, "same_as": 100}
    assert checks["duplicates"]["train"]["examples"][0] == {"index": 300, "same_as": 0}


def test_imbalance_names_the_largest_and_smallest_class_of_each_split():
    labels = torch.tensor([0] * 30 + [1] * 10 + [0, 1])
    is_test = torch.tensor([False] * 40 + [True] * 2)
    images = torch.arange(42, dtype=torch.uint8).view(42, 1, 1, 1).expand(42, 1, 2, 2).clone()
    checks = data_checks(ImageData(["a", "b"], labels, is_test, "idx", images=images))
    assert checks["imbalance"]["train"] == {
        "largest": {"class": "a", "count": 30},
        "smallest": {"class": "b", "count": 10},
        "ratio": 3.0,
    }
    assert checks["imbalance"]["test"]["ratio"] == 1.0
    assert checks["duplicates"]["train"]["count"] == 0 and checks["leakage"]["count"] == 0


def test_identical_pixels_are_duplicates_whatever_their_labels():
    images = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    images[3] = 7
    data = ImageData(
        ["a", "b"],
        torch.tensor([0, 1, 0, 1]),
        torch.tensor([False, False, True, True]),
        "idx",
        images=images,
    )
    checks = data_checks(data)
    assert checks["duplicates"]["train"]["count"] == 1
    assert checks["leakage"] == {"count": 1, "examples": [{"index": 2, "same_as": 0}]}
