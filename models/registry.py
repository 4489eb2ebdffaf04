"""The networks a job spec may name, and how each is rebuilt from plain arguments."""

from dataclasses import dataclass

from torch import nn

from models.data import IMAGE_TASK, TEXT_TASK
from models.image import SmallImageResNet18, TutorialCNN
from models.text import BagOfEmbeddings, TextCNN


@dataclass(frozen=True)
class Architecture:
    name: str
    task: str
    network: type[nn.Module]
    summary: str
    text_ngrams: int = 1  # text networks: n-grams added to the vocabulary


ARCHITECTURES = {
    arch.name: arch
    for arch in (
        Architecture("tutorial_cnn", IMAGE_TASK, TutorialCNN, "the seed's 2-conv, 3-fc CNN"),
        Architecture("resnet18", IMAGE_TASK, SmallImageResNet18, "ResNet-18 for small images"),
        Architecture(
            "bag_of_embeddings",
            TEXT_TASK,
            BagOfEmbeddings,
            "fastText-like mean of word and bigram embeddings",
            text_ngrams=2,
        ),
        Architecture("text_cnn", TEXT_TASK, TextCNN, "Kim (2014) CNN over words"),
    )
}


def build_network(arch: str, model_args: dict) -> nn.Module:
    return ARCHITECTURES[arch].network(**model_args)
