"""Plain PyTorch shared by the API and the worker: networks, data, checkpoints."""
