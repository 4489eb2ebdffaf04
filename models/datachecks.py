"""What an upload's examples say about its quality: class imbalance, exact duplicates within
a split, and examples of the test split that are also in the training split (leakage)."""

import hashlib

from models.data import ImageData, LabelledData, TextData

EXAMPLES_SHOWN = 5  # positions of duplicates and leaks named with their counts
SPLIT_MASKS = {"train": False, "test": True}  # is_test for each split


def data_checks(data: LabelledData) -> dict:
    """Counts, and a few example positions (in the dataset's order) of each finding."""
    digests = example_digests(data)
    return {
        "imbalance": {split: imbalance(counts) for split, counts in data.counts().items()},
        "duplicates": {
            split: duplicates([digests[i] for i in positions], positions)
            for split, positions in _positions_by_split(data).items()
        },
        "leakage": leakage(data, digests),
    }


def example_digests(data: LabelledData) -> list[bytes]:
    """A 16-byte digest of each example's content (its pixels, or its text, exactly)."""
    if isinstance(data, ImageData):
        rows = data.images.reshape(len(data.images), -1).numpy()
        return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows]
    if isinstance(data, TextData):
        return [hashlib.blake2b(text.encode(), digest_size=16).digest() for text in data.texts]
    raise TypeError(f"no digests for {type(data).__name__}")


def imbalance(counts: dict[str, int]) -> dict:
    """The largest and smallest class of one split, and how many times larger the first is
    (None when a class has no example in the split)."""
    largest = max(counts, key=counts.__getitem__)
    smallest = min(counts, key=counts.__getitem__)
    ratio = counts[largest] / counts[smallest] if counts[smallest] else None
    return {
        "largest": {"class": largest, "count": counts[largest]},
        "smallest": {"class": smallest, "count": counts[smallest]},
        "ratio": round(ratio, 4) if ratio is not None else None,
    }


def duplicates(digests: list[bytes], positions: list[int]) -> dict:
    """Examples that repeat an earlier one of the same split: their count (copies beyond
    the first) and the first few, each with the position of the example it repeats."""
    first_seen: dict[bytes, int] = {}
    repeats = []
    for digest, position in zip(digests, positions, strict=True):
        if digest in first_seen:
            repeats.append({"index": position, "same_as": first_seen[digest]})
        else:
            first_seen[digest] = position
    return {"count": len(repeats), "examples": repeats[:EXAMPLES_SHOWN]}


def leakage(data: LabelledData, digests: list[bytes]) -> dict:
    """Test examples whose content is also in the training split: their count and the
    first few, each with the position of a training example it equals."""
    in_train: dict[bytes, int] = {}
    leaks = []
    for position, (digest, is_test) in enumerate(zip(digests, data.is_test.tolist(), strict=True)):
        if not is_test:
            in_train.setdefault(digest, position)
    for position, (digest, is_test) in enumerate(zip(digests, data.is_test.tolist(), strict=True)):
        if is_test and digest in in_train:
            leaks.append({"index": position, "same_as": in_train[digest]})
    return {"count": len(leaks), "examples": leaks[:EXAMPLES_SHOWN]}


def _positions_by_split(data: LabelledData) -> dict[str, list[int]]:
    by_split: dict[str, list[int]] = {}
    for split, is_test in SPLIT_MASKS.items():
        positions = (data.is_test == is_test).nonzero().flatten().tolist()
        if positions:
            by_split[split] = positions
    return by_split
