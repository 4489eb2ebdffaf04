"""The epoch metric names are declared once (app.jobspec.EPOCH_METRICS); the typed records
that carry them must name the same metrics."""

from dataclasses import fields

from app.jobspec import EPOCH_METRICS, EarlyStopping
from app.schemas import EpochPublic, MetricSeries
from app.store.tables import EpochMetrics
from workers.training import EpochResult

# What an epoch's record holds besides its metrics.
EPOCH_FACTS = {"epoch", "seconds", "samples_per_second"}


def test_every_epoch_record_carries_exactly_the_epoch_metrics():
    columns = {column.name for column in EpochMetrics.__table__.columns}
    assert columns - {"id", "job_id", "created_at"} == {*EPOCH_METRICS, *EPOCH_FACTS}
    assert {field.name for field in fields(EpochResult)} == {*EPOCH_METRICS, *EPOCH_FACTS}
    assert set(EpochPublic.model_fields) == {*EPOCH_METRICS, *EPOCH_FACTS}


def test_early_stopping_and_metric_series_accept_every_epoch_metric():
    for name in EPOCH_METRICS:
        assert EarlyStopping(monitor=name).monitor == name
        assert MetricSeries(job_id="j", name=name, points=[]).name == name
