"""Compress and export a trained model version; report what that costs and what it gains.

    .venv/bin/python -m workers.deploy MODEL_OR_JOB_ID [--batch 64] [--threads N]

Run it where the worker runs (same TRAINSERVE_ settings). It writes model.onnx and
model.int8.onnx to TRAINSERVE_ARTIFACTS_DIR/deploy/<model id>/ (a local folder, whichever
artefact store holds the checkpoint), then evaluates four variants on the job's own
validation examples, preprocessed as serving does: the float32 PyTorch network, its int8
dynamic quantisation, and the two ONNX files under ONNX Runtime. Speeds are ratios against
the float32 network measured in the same run (the CPU may be shared).
"""

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch

from app.config import get_settings
from app.jobspec import JobSpec
from app.store.artefacts import get_store, load
from app.store.datasets import get_dataset
from app.store.db import get_session_factory
from app.store.jobs import get_job
from app.store.versions import checkpoint_of, find_model
from models.checkpoint import network_from_checkpoint
from models.data import IMAGE_TASK, ImagePreprocessing, data_from_state, with_test_split
from models.export import ExportError, OnnxNetwork, export_onnx, quantize_int8, quantize_onnx_int8
from models.files import load_plain
from models.text import pad_batch, tokenizer_from_state
from workers.recipe import split_indices

LATENCY_SAMPLES = 200  # single-example calls timed for the latency column


def validation_examples(spec: JobSpec, checkpoint: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The job's validation split (same seed, same split), preprocessed as serving does."""
    with get_session_factory()() as session:
        data = _dataset(session, spec.dataset_id)
        if spec.validation.dataset_id:
            data = with_test_split(data, _dataset(session, spec.validation.dataset_id))
    _, val_index = split_indices(data, spec, torch.Generator().manual_seed(spec.seed))
    preprocessing = checkpoint["preprocessing"]
    if checkpoint["task"] == IMAGE_TASK:
        image = ImagePreprocessing(**preprocessing["image"])
        return image.normalize(data.images[val_index]), data.labels[val_index]
    tokenizer = tokenizer_from_state(preprocessing)
    encoded = [tokenizer.encode(data.texts[i]) for i in val_index.tolist()]
    return pad_batch(encoded, 5), data.labels[val_index]


def _dataset(session, dataset_id: str):
    dataset = get_dataset(session, dataset_id)
    if dataset is None:
        raise SystemExit(f"no dataset {dataset_id!r}: the model's job trained on one")
    return data_from_state(load(get_store(), dataset.path, dataset.file_sha256))


def measure(predict: Callable, inputs: torch.Tensor, labels: torch.Tensor, batch: int) -> dict:
    """Accuracy and examples/s over batches, and the median single-example latency."""
    correct, started = 0, time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(labels), batch):
            logits = predict(inputs[start : start + batch])
            correct += int((logits.argmax(dim=1) == labels[start : start + batch]).sum())
        per_second = len(labels) / (time.perf_counter() - started)
        latencies = []
        for i in range(min(LATENCY_SAMPLES, len(labels))):
            started = time.perf_counter()
            predict(inputs[i : i + 1])
            latencies.append(time.perf_counter() - started)
    latencies.sort()
    return {
        "accuracy": correct / len(labels),
        "per_second": per_second,
        "latency_ms": 1000 * latencies[len(latencies) // 2],
    }


def variants(network, example: torch.Tensor, folder: Path, threads: int) -> dict[str, Callable]:
    found: dict[str, Callable] = {
        "float32, PyTorch": network,
        "int8 dynamic, PyTorch": quantize_int8(network),
    }
    try:
        onnx = export_onnx(network, example, folder / "model.onnx")
    except ExportError as exc:
        print(f"no ONNX variants: {exc}")
        return found
    int8 = quantize_onnx_int8(onnx, folder / "model.int8.onnx")
    found["float32, ONNX Runtime"] = OnnxNetwork(onnx, threads)
    found["int8 dynamic, ONNX Runtime"] = OnnxNetwork(int8, threads)
    return found


def report(model_or_job_id: str, batch: int, threads: int) -> None:
    with get_session_factory()() as session:
        model = find_model(session, model_or_job_id)
        if model is None:
            raise SystemExit(f"no model version or succeeded job {model_or_job_id!r}")
        job = get_job(session, model.job_id)
        if job is None:
            raise SystemExit(f"model {model.id} names job {model.job_id}, which is not stored")
        spec = JobSpec.model_validate(job.spec)
        path = checkpoint_of(model, get_store())
    checkpoint = load_plain(path)
    network = network_from_checkpoint(checkpoint)
    inputs, labels = validation_examples(spec, checkpoint)
    folder = get_settings().artifacts_dir / "deploy" / model.id
    folder.mkdir(parents=True, exist_ok=True)
    found = variants(network, inputs[:2], folder, threads)
    files = {
        "float32, PyTorch": path,
        "float32, ONNX Runtime": folder / "model.onnx",
        "int8 dynamic, ONNX Runtime": folder / "model.int8.onnx",
    }
    print(
        f"model {model.id} ({checkpoint['arch']}), {len(labels)} validation examples, "
        f"batch {batch}, {threads} threads, load avg {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'variant':28} {'accuracy':>8} {'change':>7} {'ex/s':>8} {'speed-up':>8} "
        f"{'p50 ms':>7} {'speed-up':>8}  file"
    )
    base = None
    for name, predict in found.items():
        figures = measure(predict, inputs, labels, batch)
        base = base or figures
        file = files.get(name)
        stored = f"{file.name} {file.stat().st_size / 1e6:.1f} MB" if file else "quantised on load"
        print(
            f"{name:28} {figures['accuracy']:>8.4f} {figures['accuracy'] - base['accuracy']:>+7.4f}"
            f" {figures['per_second']:>8.0f} {figures['per_second'] / base['per_second']:>8.2f}"
            f" {figures['latency_ms']:>7.2f} {base['latency_ms'] / figures['latency_ms']:>8.2f}"
            f"  {stored}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a model id or the id of a succeeded job")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument(
        "--threads", type=int, default=get_settings().torch_threads or os.cpu_count()
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report(args.model, args.batch, args.threads)


if __name__ == "__main__":
    main()
