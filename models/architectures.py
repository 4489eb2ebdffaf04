"""The networks a job spec may name, and how each is rebuilt from plain arguments."""

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from models.data import IMAGE_TASK, TEXT_TASK
from models.image import FastResNet, TutorialCNN, small_image_resnet18
from models.pretrained import SentenceEncoderClassifier
from models.text import BagOfEmbeddings, TextCNN, TextGRU


@dataclass(frozen=True)
class Architecture:
    name: str
    task: str
    network: Callable[..., nn.Module]  # a network class, or a function that builds one
    summary: str
    text_ngrams: int = 1  # text networks: n-grams added to the vocabulary
    convolutional: bool = False  # gains from channels_last memory
    bf16_on_cpu: bool = False  # gains from bfloat16 autocast on a CPU with native bf16 (AMX)
    pretrained: bool = False  # text networks with their own tokenizer (no vocabulary built)
    fixed_args: tuple[tuple[str, object], ...] = ()  # model arguments the name implies


ARCHITECTURES = {
    arch.name: arch
    for arch in (
        Architecture("tutorial_cnn", IMAGE_TASK, TutorialCNN, "the seed's 2-conv, 3-fc CNN"),
        Architecture(
            "resnet18",
            IMAGE_TASK,
            small_image_resnet18,
            "ResNet-18 for small images",
            convolutional=True,
            bf16_on_cpu=True,
        ),
        Architecture(
            "fast_resnet",
            IMAGE_TASK,
            FastResNet,
            "ResNet-9-style network sized for CPU training (model.width sets its size)",
            convolutional=True,
            bf16_on_cpu=True,
        ),
        Architecture(
            "bag_of_embeddings",
            TEXT_TASK,
            BagOfEmbeddings,
            "fastText-like mean of word and bigram embeddings",
            text_ngrams=2,
        ),
        Architecture("text_cnn", TEXT_TASK, TextCNN, "Kim (2014) CNN over words"),
        Architecture("text_gru", TEXT_TASK, TextGRU, "bidirectional GRU over words, max-pooled"),
        Architecture(
            "minilm_frozen",
            TEXT_TASK,
            SentenceEncoderClassifier,
            "pretrained all-MiniLM-L6-v2 sentence features (frozen) and a trained linear head",
            pretrained=True,
            bf16_on_cpu=True,
            fixed_args=(("fine_tune", False),),
        ),
        Architecture(
            "minilm_finetuned",
            TEXT_TASK,
            SentenceEncoderClassifier,
            "pretrained all-MiniLM-L6-v2 fine-tuned with a linear head",
            pretrained=True,
            bf16_on_cpu=True,
            fixed_args=(("fine_tune", True),),
        ),
    )
}


def build_network(arch: str, model_args: dict) -> nn.Module:
    return ARCHITECTURES[arch].network(**model_args)
