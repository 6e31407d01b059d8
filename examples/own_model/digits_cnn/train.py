"""Train a small CNN on scikit-learn's 8x8 digits; the function raynas calls in each trial.

Nothing here knows about raynas or Ray: ``evaluate(config, report)`` takes the trial's
config (the nested dict of the search space in ``search.yaml``, constants included) and a
``report`` function to call once per epoch (raynas forwards it to ``ray.tune.report``, so
a scheduler such as ASHA can stop a poor trial early), and returns its final metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np


@lru_cache(maxsize=1)
def load_digits_splits(seed: int = 0) -> dict[str, np.ndarray]:
    """The 1,797 digits as float32 images (N, 1, 8, 8), split 1,000 / 400 / 397, seeded."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[:, None, :, :]
    y = data.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    return {"x_train": x[:1000], "y_train": y[:1000], "x_val": x[1000:1400],
            "y_val": y[1000:1400], "x_test": x[1400:], "y_test": y[1400:]}


def build_model(config: dict[str, Any]) -> Any:
    """``depth`` convolution blocks of ``width`` channels and ``kernel`` size, then a classifier.

    The first block halves the 8x8 images (max pooling), so deeper blocks stay cheap.
    """
    import torch

    layers: list[Any] = []
    channels = 1
    for block in range(int(config["depth"])):
        layers += [
            torch.nn.Conv2d(channels, int(config["width"]), int(config["kernel"]),
                            padding=int(config["kernel"]) // 2, bias=False),
            torch.nn.BatchNorm2d(int(config["width"])),
            torch.nn.ReLU(),
        ]
        if block == 0:
            layers.append(torch.nn.MaxPool2d(2))
        channels = int(config["width"])
    layers += [torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(channels, 10)]
    return torch.nn.Sequential(*layers)


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float(100.0 * (pred == y).mean())


def evaluate(
    config: dict[str, Any], report: Callable[[dict[str, float]], None]
) -> dict[str, float]:
    """Train for ``epochs`` epochs, report validation accuracy each epoch; final metrics."""
    import torch

    torch.set_num_threads(1)  # tiny model: threads only add contention between trials
    torch.manual_seed(int(config.get("seed", 0)))
    data = load_digits_splits(int(config.get("data_seed", 0)))
    model = build_model(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=float(config["lr"]), momentum=0.9)
    x_train = torch.from_numpy(data["x_train"])
    y_train = torch.from_numpy(data["y_train"])
    batch = int(config.get("batch_size", 64))
    generator = torch.Generator().manual_seed(int(config.get("seed", 0)))
    val_acc = 0.0
    for epoch in range(1, int(config["epochs"]) + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            loss = torch.nn.functional.cross_entropy(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        val_acc = _accuracy(model, data["x_val"], data["y_val"])
        report({"val_acc": val_acc, "train_loss": total / len(order), "epoch": float(epoch)})
    params = sum(p.numel() for p in model.parameters())
    return {"val_acc": val_acc, "test_acc": _accuracy(model, data["x_test"], data["y_test"]),
            "params": float(params)}
