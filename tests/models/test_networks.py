import pytest
import torch

from models.checkpoint import make_checkpoint, network_from_checkpoint
from models.data import IMAGE_TASK, TEXT_TASK
from models.files import file_sha256, load_plain, save_atomically
from models.predictor import Predictor
from models.registry import ARCHITECTURES, build_network
from models.text import Vocabulary, pad_batch, tokenize, with_ngrams
from tests.conftest import png_bytes


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
@pytest.mark.parametrize("arch", ["tutorial_cnn", "resnet18"])
def test_image_networks_take_small_colour_and_grey_images(arch, shape):
    channels, height, width = shape
    network = build_network(
        arch,
        {"num_classes": 7, "channels": channels, "height": height, "width": width, "dropout": 0.2},
    )
    assert network(torch.zeros(2, *shape)).shape == (2, 7)


def test_tutorial_cnn_is_the_seed_network():
    network = build_network("tutorial_cnn", {"num_classes": 10})
    convs = [m for m in network.modules() if isinstance(m, torch.nn.Conv2d)]
    linears = [m for m in network.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(6, (5, 5)), (16, (5, 5))]
    assert [(fc.in_features, fc.out_features) for fc in linears] == [
        (400, 120),
        (120, 84),
        (84, 10),
    ]


@pytest.mark.parametrize("arch", ["bag_of_embeddings", "text_cnn"])
def test_text_networks_take_padded_token_ids(arch):
    network = build_network(arch, {"num_classes": 2, "vocab_size": 50})
    assert network(pad_batch([[3, 4], [5]], network.min_length)).shape == (2, 2)


def test_every_architecture_names_its_task():
    assert {arch.task for arch in ARCHITECTURES.values()} == {IMAGE_TASK, TEXT_TASK}


def test_tokenizer_vocabulary_and_ngrams():
    assert tokenize("It's GREAT, isn't it?") == ["it's", "great", ",", "isn't", "it", "?"]
    assert with_ngrams(["a", "b", "c"], 2) == ["a", "b", "c", "a b", "b c"]
    vocabulary = Vocabulary.build(["good film", "bad film", "good good"], ngrams=2, min_freq=2)
    assert vocabulary.tokens[:2] == ["<pad>", "<unk>"]
    assert set(vocabulary.tokens[2:]) == {"good", "film"}
    assert vocabulary.encode("good unseen") == [vocabulary.tokens.index("good"), 1, 1]
    assert Vocabulary(**vocabulary.to_state()).encode("film") == vocabulary.encode("film")


def test_checkpoint_round_trip_predicts_the_same(tmp_path):
    network = build_network(
        "tutorial_cnn", {"num_classes": 2, "channels": 3, "height": 16, "width": 16}
    )
    preprocessing = {
        "image": {"channels": 3, "height": 16, "width": 16, "mean": [0.5] * 3, "std": [0.25] * 3}
    }
    checkpoint = make_checkpoint(
        task=IMAGE_TASK,
        arch="tutorial_cnn",
        network=network,
        classes=["cat", "dog"],
        model_args={"num_classes": 2, "channels": 3, "height": 16, "width": 16},
        preprocessing=preprocessing,
        epoch=3,
        metrics={"val_accuracy": 0.5},
    )
    path = tmp_path / "model.pt"
    sha = save_atomically(checkpoint, path)
    assert sha == file_sha256(path) and list(tmp_path.iterdir()) == [path]
    restored = network_from_checkpoint(load_plain(path))
    inputs = torch.randn(4, 3, 16, 16)
    network.eval()
    assert torch.allclose(restored(inputs), network(inputs))
    predictor = Predictor(load_plain(path))
    [ranked] = predictor.predict_images([png_bytes(torch.zeros(20, 20, 3).byte().numpy())], 5)
    assert [label for label, _ in ranked] in (["cat", "dog"], ["dog", "cat"])
    assert abs(sum(p for _, p in ranked) - 1) < 1e-4
