"""Job specs as `jobs submit` reads them: the file, then each --set."""

import pytest

from trainserve_cli.specs import SpecError, apply_sets, load_spec, parse_value

SPEC = {"task": "image_classification", "hyperparameters": {"epochs": 1, "lr": 0.1}}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0.01", 0.01),
        ("1e-3", 0.001),  # YAML 1.1 would read this as text
        ("3", 3),
        ("true", True),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ('{"patience": 2}', {"patience": 2}),
        ("cosine", "cosine"),
        ("mnist-cnn", "mnist-cnn"),
        ('"2024"', "2024"),  # quoted: a number sent as text
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_a_value_is_json_where_it_reads_as_json_else_text(text, value):
    assert parse_value(text) == value


def test_sets_change_nested_fields_and_make_missing_objects():
    spec = apply_sets(
        SPEC,
        [
            "hyperparameters.lr=0.01",
            "hyperparameters.lr_schedule=cosine",
            "early_stopping.patience=2",
            "name=mnist-cnn",
            "validation.dataset_id=abc=def",  # only the first = splits
        ],
    )
    assert spec == {
        "task": "image_classification",
        "hyperparameters": {"epochs": 1, "lr": 0.01, "lr_schedule": "cosine"},
        "early_stopping": {"patience": 2},
        "name": "mnist-cnn",
        "validation": {"dataset_id": "abc=def"},
    }
    assert SPEC["hyperparameters"] == {"epochs": 1, "lr": 0.1}  # the given spec is kept


def test_a_later_set_wins_and_a_null_object_becomes_one():
    spec = apply_sets({"early_stopping": None}, ["seed=1", "seed=2", "early_stopping.patience=4"])
    assert spec == {"seed": 2, "early_stopping": {"patience": 4}}


@pytest.mark.parametrize(
    ("assignment", "problem"),
    [
        ("hyperparameters", "write it as field.path=value"),
        ("=3", "write it as field.path=value"),
        ("hyperparameters..lr=3", "write it as field.path=value"),
        ("task.name=x", "task is not an object of fields"),
        ("hyperparameters.epochs.value=2", "hyperparameters.epochs is not an object of fields"),
    ],
)
def test_a_set_that_cannot_apply_names_itself(assignment, problem):
    with pytest.raises(SpecError, match=problem) as raised:
        apply_sets(SPEC, [assignment])
    assert assignment in str(raised.value)


def test_specs_load_from_json_and_yaml(tmp_path):
    (tmp_path / "job.json").write_text('{"task": "text_sentiment", "seed": 1}')
    (tmp_path / "job.yaml").write_text("task: text_sentiment\nhyperparameters:\n  lr: 0.01\n")
    assert load_spec(str(tmp_path / "job.json")) == {"task": "text_sentiment", "seed": 1}
    assert load_spec(str(tmp_path / "job.yaml")) == {
        "task": "text_sentiment",
        "hyperparameters": {"lr": 0.01},
    }


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("job.json", "{task: 1}", "job.json is not valid JSON"),
        ("job.yaml", "task: [unclosed", "job.yaml is not valid YAML"),
        ("job.yml", "- a list\n- of things\n", "holds no job spec"),
        ("job.json", "", "job.json is not valid JSON"),
    ],
)
def test_a_spec_file_that_is_no_spec_is_refused_by_name(tmp_path, name, text, problem):
    (tmp_path / name).write_text(text)
    with pytest.raises(SpecError, match=problem):
        load_spec(str(tmp_path / name))


def test_a_missing_spec_file_says_so(tmp_path):
    with pytest.raises(SpecError, match=r"cannot read .*nothing\.yaml: No such file"):
        load_spec(str(tmp_path / "nothing.yaml"))
