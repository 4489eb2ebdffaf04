"""Text networks and the tokenizer/vocabulary they share with serving."""

import re
from collections import Counter
from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.pretrained import CHARACTERS_PER_TOKEN, WordPieceTokenizer

PAD, UNKNOWN = "<pad>", "<unk>"

TOKEN_PATTERN = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def tokenize(text: str) -> list[str]:
    return TOKEN_PATTERN.findall(text.lower())


def with_ngrams(tokens: list[str], ngrams: int) -> list[str]:
    grams = list(tokens)
    for n in range(2, ngrams + 1):
        grams += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return grams


@dataclass
class Vocabulary:
    """Token strings by id (0 is padding, 1 unknown), kept in the checkpoint."""

    tokens: list[str]
    ngrams: int = 1
    max_length: int = 256

    @classmethod
    def build(
        cls,
        texts: list[str],
        ngrams: int = 1,
        min_freq: int = 1,
        max_size: int = 200_000,
        max_length: int = 256,
    ) -> "Vocabulary":
        counts = Counter(gram for text in texts for gram in with_ngrams(tokenize(text), ngrams))
        frequent = [gram for gram, count in counts.most_common(max_size) if count >= min_freq]
        return cls([PAD, UNKNOWN, *frequent], ngrams, max_length)

    def __post_init__(self) -> None:
        self._ids = {token: i for i, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def max_characters(self) -> int:
        return self.max_length * CHARACTERS_PER_TOKEN

    def encode(self, text: str) -> list[int]:
        grams = with_ngrams(tokenize(text[: self.max_characters]), self.ngrams)[: self.max_length]
        return [self._ids.get(gram, 1) for gram in grams] or [1]

    def to_state(self) -> dict:
        return asdict(self)


def tokenizer_from_state(preprocessing: dict) -> "Vocabulary | WordPieceTokenizer":
    """A checkpoint's text preprocessing: its own vocabulary, or a pretrained encoder's."""
    if "wordpiece" in preprocessing:
        return WordPieceTokenizer(**preprocessing["wordpiece"])
    return Vocabulary(**preprocessing["vocabulary"])


def shortest_input(network: object) -> int:
    """The fewest tokens a text network takes (its class attribute `min_length`), else 1."""
    return getattr(network, "min_length", 1)


def pad_batch(sequences: list[list[int]], min_length: int = 1) -> torch.Tensor:
    """Right-pad token id lists with 0 into one LongTensor."""
    width = max(min_length, max(map(len, sequences)))
    return torch.tensor([sequence + [0] * (width - len(sequence)) for sequence in sequences])


class BagOfEmbeddings(nn.Module):
    """fastText-like: the mean of word (and n-gram) embeddings, then a linear layer."""

    min_length = 1
    padding_invariant = True  # EmbeddingBag leaves padding (index 0) out of the mean

    def __init__(
        self, num_classes: int, vocab_size: int, embedding_dim: int = 64, dropout: float = 0.0
    ):
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embedding_dim, mode="mean", padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(embedding_dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.embedding(tokens)))


class TextCNN(nn.Module):
    """Kim (2014): parallel convolutions over word embeddings, max-pooled over time."""

    widths = (3, 4, 5)
    min_length = max(widths)  # shorter inputs are padded up to the widest filter

    def __init__(
        self,
        num_classes: int,
        vocab_size: int,
        embedding_dim: int = 128,
        filters: int = 100,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.convs = nn.ModuleList(nn.Conv1d(embedding_dim, filters, w) for w in self.widths)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(filters * len(self.widths), num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        embedded = self.embedding(tokens).transpose(1, 2)
        pooled = [conv(embedded).relu().amax(dim=2) for conv in self.convs]
        return self.fc(self.dropout(torch.cat(pooled, dim=1)))


class TextGRU(nn.Module):
    """A bidirectional GRU over word embeddings, max-pooled over the real (unpadded) tokens."""

    min_length = 1
    padding_invariant = True  # packed sequences: padding never enters the GRU or the pool

    def __init__(
        self,
        num_classes: int,
        vocab_size: int,
        embedding_dim: int = 128,
        hidden: int = 128,
        dropout: float = 0.5,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        self.gru = nn.GRU(embedding_dim, hidden, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2 * hidden, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        lengths = (tokens != 0).sum(dim=1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.dropout(self.embedding(tokens)), lengths, batch_first=True, enforce_sorted=False
        )
        outputs, _ = self.gru(packed)
        # Padding positions come back as -inf so the max-pool sees real tokens only.
        outputs, _ = nn.utils.rnn.pad_packed_sequence(
            outputs, batch_first=True, padding_value=float("-inf")
        )
        return self.fc(self.dropout(outputs.amax(dim=1)))
