import pytest
import torch

from models.architectures import ARCHITECTURES, build_network
from models.checkpoint import make_checkpoint, network_from_checkpoint
from models.data import IMAGE_TASK, TEXT_TASK
from models.files import file_sha256, load_plain, save_atomically
from models.predictor import Predictor
from models.pretrained import WordPieceTokenizer
from models.text import Vocabulary, pad_batch, tokenize, with_ngrams
from tests.conftest import png_bytes


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28)])
@pytest.mark.parametrize("arch", ["tutorial_cnn", "resnet18", "fast_resnet"])
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


@pytest.mark.parametrize("arch", ["bag_of_embeddings", "text_cnn", "text_gru"])
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


@pytest.mark.parametrize(
    "tokenizer",
    [Vocabulary.build(["a truly great film, and a dull one."], ngrams=2), WordPieceTokenizer()],
    ids=["vocabulary", "wordpiece"],
)
def test_a_long_text_is_cut_before_tokenising_with_the_same_tokens(tokenizer):
    text = "A truly great film, and a dull one. " * 3000  # 108,000 characters
    cut = text[: tokenizer.max_characters]
    assert len(cut) < len(text) / 20  # the tokeniser reads a twentieth of it
    assert len(tokenizer.encode(text)) == tokenizer.max_length  # still a full input
    if isinstance(tokenizer, Vocabulary):  # the first max_length grams of the whole text
        grams = with_ngrams(tokenize(text), tokenizer.ngrams)[: tokenizer.max_length]
        assert tokenizer.encode(text) == [tokenizer.tokens.index(g) for g in grams]
    else:
        assert tokenizer.encode_all([text]) == [tokenizer.encode(text)]


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


def test_fast_resnet_width_sets_its_stages_and_small_images_are_refused():
    network = build_network("fast_resnet", {"num_classes": 10, "base_width": 16})
    assert network.head[-1].in_features == 64  # 16, 32, 64
    with pytest.raises(ValueError, match="at least 8x8, not 6x6"):
        build_network("fast_resnet", {"num_classes": 2, "height": 6, "width": 6})


def test_gru_ignores_padding():
    network = build_network("text_gru", {"num_classes": 2, "vocab_size": 50}).eval()
    short, padded = network(torch.tensor([[3, 4, 5]])), network(torch.tensor([[3, 4, 5, 0, 0]]))
    assert torch.allclose(short, padded, atol=1e-6)
    assert not torch.allclose(short, network(torch.tensor([[5, 4, 3]])))


def test_frozen_encoder_checkpoints_only_its_head():
    frozen = build_network("minilm_frozen", {"num_classes": 2, "fine_tune": False})
    assert list(frozen.state_dict()) == ["head.1.weight", "head.1.bias"]
    assert not any(p.requires_grad for p in frozen.encoder.parameters())
    assert not frozen.train().encoder.training  # its dropout stays off
    restored = build_network("minilm_frozen", {"num_classes": 2, "fine_tune": False})
    restored.load_state_dict(frozen.state_dict())  # the encoder comes from the package
    tuned = build_network("minilm_finetuned", {"num_classes": 2, "fine_tune": True})
    assert len(tuned.state_dict()) > 90 and tuned.train().encoder.training


def test_pretrained_checkpoint_predicts_with_the_encoders_own_tokenizer(tmp_path):
    tokenizer = WordPieceTokenizer(max_length=16)
    ids = tokenizer.encode("A gripping film")
    assert ids[0] == 101 and ids[-1] == 102 and len(ids) == 5  # [CLS] a gripping film [SEP]
    assert len(tokenizer.encode("word " * 100)) == 16
    network = build_network("minilm_frozen", {"num_classes": 2, "fine_tune": False})
    checkpoint = make_checkpoint(
        task=TEXT_TASK,
        arch="minilm_frozen",
        network=network,
        classes=["negative", "positive"],
        model_args={"num_classes": 2, "fine_tune": False},
        preprocessing={"wordpiece": tokenizer.to_state()},
        epoch=1,
        metrics={},
    )
    save_atomically(checkpoint, tmp_path / "model.pt")
    predictor = Predictor(load_plain(tmp_path / "model.pt"))
    [first, second] = predictor.predict_texts(["a gripping film", "dull"], 1)
    network.eval()
    with torch.inference_mode():
        expected = network(torch.tensor([ids])).softmax(dim=1).max().item()
    assert first[0][1] == pytest.approx(expected, abs=1e-5) and second[0][0] in (
        "negative",
        "positive",
    )
