"""``ProxyScorer``: zero-cost proxies of a space's architectures, on one fixed batch of data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from raynas.zero_cost.proxies import DATA_FREE, check_proxy_names
from spaces import Arch, SearchSpace

__all__ = ["ProxyScorer", "check_proxy_names"]

_DEFAULT_CHANNELS = 3  # with no dataset: build_network's default, RGB


def _optional_positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {str(value)[:40]!r}")
    return int(value)


class ProxyScorer:
    """Scores architectures of ``space`` by zero-cost proxies (a ``searchers.protocols.Scorer``).

    Networks are ``space.build_network(arch)`` at the space's own scale and input resolution
    (NAS-Bench-201's default space is the published one: C=16, N=5, 32x32). Data-dependent
    proxies read one seeded batch of ``dataset`` (digits, ``npz:PATH``, an image folder) from
    its train split, resized (bilinear) to the space's resolution and, for greyscale data,
    repeated to the networks' ``in_channels``. ``in_channels`` and ``num_classes`` default to
    the dataset's (whichever proxies are asked, so a proxy's value never depends on the
    others), else to 3 and 10; ``in_channels=3`` scores the digits as 32x32x3 images on the
    default NAS-Bench-201 space. The scorer pickles as options only; each process loads its
    batch once, lazily.

    Example:
        >>> from spaces import create_space
        >>> space = create_space("nb201", channels=8, cells_per_stage=1, resolution=8)
        >>> scorer = ProxyScorer(space, ["synflow", "params"], dataset=None)
        >>> scorer([space.sample(np.random.default_rng(0))]).shape
        (1, 2)
    """

    def __init__(
        self,
        space: SearchSpace,
        proxies: Sequence[str],
        *,
        dataset: str | Mapping[str, Any] | None = "digits",
        batch_size: int = 64,
        seed: int = 0,
        device: str = "auto",
        num_classes: int | None = None,
        in_channels: int | None = None,
    ) -> None:
        self.space = space
        self.proxies = check_proxy_names(proxies)
        data_needed = [p for p in self.proxies if p not in DATA_FREE]
        if data_needed and dataset is None:
            raise ValueError(f"dataset: proxy {data_needed[0]!r} needs data (digits, npz:PATH "
                             "or an image folder)")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 2:
            raise ValueError(f"batch_size must be an integer >= 2, got {str(batch_size)[:40]!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {str(seed)[:40]!r}")
        if not isinstance(device, str) or not (
                device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, got {str(device)[:40]!r}")
        if dataset is not None:
            from raynas.evaluators.data import resolve_spec

            resolve_spec(dataset)  # a bad spec fails here, not in a worker
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.device = device
        self.num_classes = _optional_positive("num_classes", num_classes)
        self.in_channels = _optional_positive("in_channels", in_channels)
        self.seconds = 0.0
        self._batch: Any = None  # (images, labels, num_classes) as numpy, loaded lazily
        self._tensors: Any = None  # the batch as torch tensors at the networks' input shape
        self._shape: Any = None

    @property
    def names(self) -> list[str]:
        """The proxies, one column each in what ``__call__`` returns."""
        return list(self.proxies)

    @property
    def needs_data(self) -> bool:
        """Whether any proxy reads the labelled batch."""
        return any(p not in DATA_FREE for p in self.proxies)

    def torch_device(self) -> str:
        """``cuda`` when asked or (``auto``) available, else ``cpu``."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def uses_cuda(self) -> bool:
        """Whether scoring runs on a GPU."""
        return self.torch_device().startswith("cuda")

    def _load_batch(self) -> Any:
        if self.dataset is None:
            return None
        if self._batch is None:
            from raynas.evaluators.data import load_dataset

            data = load_dataset(self.dataset)
            rng = np.random.default_rng(self.seed)
            n = min(self.batch_size, len(data.y_train))
            idx = np.sort(rng.choice(len(data.y_train), size=n, replace=False))
            self._batch = (data.x_train[idx], data.y_train[idx], int(data.num_classes))
        return self._batch

    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of the networks' inputs."""
        if self._shape is None:
            self._shape = self._input_shape()
        return self._shape  # type: ignore[no-any-return]

    def _input_shape(self) -> tuple[int, int, int]:
        resolution = self.space.input_resolution()
        batch = self._load_batch()
        channels = self.in_channels or (_DEFAULT_CHANNELS if batch is None
                                        else int(batch[0].shape[1]))
        if resolution is None:
            if batch is None:
                raise ValueError(f"space {self.space.name!r} has no input resolution and no "
                                 "dataset is set to take it from")
            return channels, int(batch[0].shape[2]), int(batch[0].shape[3])
        return channels, resolution, resolution

    def classes(self) -> int:
        """Classes of the networks' classifier: ``num_classes``, else the dataset's, else 10."""
        if self.num_classes is not None:
            return self.num_classes
        batch = self._load_batch()
        return 10 if batch is None else int(batch[2])

    def batch(self) -> tuple[Any, Any]:
        """The labelled batch as torch tensors at ``input_shape()``, or (None, None)."""
        if not self.needs_data:
            return None, None
        if self._tensors is None:
            import torch
            import torch.nn.functional as F

            images, labels, _ = self._load_batch()
            channels, height, width = self.input_shape()
            x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
            if tuple(x.shape[2:]) != (height, width):
                x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
            if x.shape[1] != channels:
                if x.shape[1] != 1:
                    raise ValueError(f"in_channels: the dataset has {x.shape[1]} channels, the "
                                     f"networks take {channels}")
                x = x.repeat(1, channels, 1, 1)
            self._tensors = (x, torch.from_numpy(np.asarray(labels, dtype=np.int64)))
        return self._tensors  # type: ignore[no-any-return]

    def score(self, arch: Arch) -> dict[str, float]:
        """Each proxy's value of ``arch`` and ``ms_<proxy>``, its compute time."""
        from raynas.zero_cost.proxies import compute_proxies

        arch = self.space.validate(arch)
        shape = self.input_shape()
        classes = self.classes()
        inputs, targets = self.batch()
        values, millis = compute_proxies(
            lambda: self.space.build_network(arch, num_classes=classes, in_channels=shape[0]),
            self.proxies, inputs=inputs, targets=targets, input_shape=shape, seed=self.seed,
            device=self.torch_device(), batch_size=self.batch_size,
        )
        self.seconds += sum(millis.values()) / 1000.0
        out = dict(values)
        out.update({f"ms_{k}": v for k, v in millis.items()})
        return out

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        """Proxy scores, shape ``(len(archs), len(names))``; NaN where a proxy is undefined."""
        out = np.full((len(archs), len(self.proxies)), np.nan)
        for i, arch in enumerate(archs):
            row = self.score(arch)
            out[i] = [row[p] for p in self.proxies]
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_batch"] = state["_tensors"] = None  # options travel; data loads where used
        state["seconds"] = 0.0  # charged per process
        return state
