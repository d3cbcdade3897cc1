"""The training input pipeline: grain streams class-balanced, dose-augmented patches from the store.

One infinite stream of *global samples* ``0, 1, 2, ...`` defines the data, whatever runs it:

- sample ``i`` comes from case ``perm_e[i mod n]`` (``e = i // n``, ``perm_e`` a seeded permutation
  of the ``n`` cases: every case once per epoch) and everything random about it (box, class,
  dose) comes from a generator seeded by ``(seed, i)`` alone;
- global batch ``b`` is samples ``b*G .. b*G+G-1`` with ``G = local_batch_size * process_count``;
  its foreground slots (:func:`petseg_jax.data.sampling.foreground_slots`) depend on ``G`` only;
- process ``p`` builds the slice ``p*L .. p*L+L-1`` of each global batch
  (:func:`local_sample_indices`).

So the processes read disjoint, complete shards of the *sample* stream, and a global batch is
byte for byte the batch a 1-process run with the same global batch size produces. The shards are
samples, not cases: a case-sharded stream would change with the process count, and resuming a
checkpoint on another number of hosts (or comparing with a 1-process run) would see other data.
Patches are read lazily from the shared store, so no process loads more than its patches.

Batches are built inside grain workers (``mp_prefetch``, spawned processes; 0 workers = in the
calling process), which open the TensorStore arrays lazily and cache them per process; the worker
code imports neither jax nor flax, and workers run with ``JAX_PLATFORMS=cpu``. Worker ``w`` of
``W`` builds global batches ``w, w+W, ...`` and grain interleaves them back in order, so the batches
do not depend on the worker count. The iterator's state is the next global sample index (plus
the seed and the case list's fingerprint to catch a mismatched resume): plain JSON, valid for any
worker count, process count or local batch size that divides it.

Only cheap CPU work happens here: crop (with padding), dose re-simulation in raw units,
normalization, dtype. Spatial and intensity augmentation run on the accelerator.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np
import tensorstore as ts
from absl import flags
from grain.multiprocessing import SharedMemoryArray

from petseg_jax.data import position, sampling, store
from petseg_jax.data.dose import DoseConfig, DoseNoise, augment_dose, estimate_count_scale
from petseg_jax.configuration import CHOICES, section
from petseg_jax.data.normalization import NormalizationConfig, normalize
from petseg_jax.workers import exit_with_parent

log = logging.getLogger("petseg_jax.data")

STATE_VERSION = 1
_SAMPLE_TAG, _EPOCH_TAG = 0x5A4D, 0xE90C  # separate the seed streams of samples and epochs
_END = 2**62  # "infinite": the stream's last global batch index
_COUNT_BLOCK = 64  # edge of the block the count scale is estimated from


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What the input pipeline reads of the ``data`` config section (commented in
    ``configs/default.py``), built by :func:`data_config`; picklable for the grain workers."""

    patch_size: tuple[int, int, int]
    normalization: NormalizationConfig
    dose_augmentation: DoseConfig
    foreground_fraction: float
    class_sampling: str
    position_channels: str
    read_threads: int
    read_buffer: int
    worker_buffer: int
    cache_mb: int

    def __post_init__(self):
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"data patch_size must be 3 positive ints, got {self.patch_size}")
        if not 0.0 <= self.foreground_fraction <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got "
                             f"{self.foreground_fraction}")
        if self.class_sampling not in CHOICES["data.class_sampling"]:
            raise ValueError(f"data class_sampling must be one of "
                             f"{CHOICES['data.class_sampling']}, got {self.class_sampling!r}")
        if self.position_channels not in CHOICES["data.position_channels"]:
            raise ValueError(f"data position_channels must be one of "
                             f"{CHOICES['data.position_channels']}, got {self.position_channels!r}")
        for name in ("read_threads", "read_buffer", "cache_mb"):
            if getattr(self, name) < 0:
                raise ValueError(f"data {name} must be >= 0, got {getattr(self, name)}")
        if self.worker_buffer < 1:
            raise ValueError(f"data worker_buffer must be >= 1, got {self.worker_buffer}")


@dataclasses.dataclass(frozen=True)
class CaseInfo:
    """What a worker needs to know about one case (no arrays: picklable and small)."""

    case_id: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    suv_factor: float | None
    intensity: dict[str, float]
    stored_factor: float
    count_scale: float | None
    locations: dict[int, np.ndarray]
    noise: dict[str, Any] | None = None  # the manifest's noise entry (dose model)

    @classmethod
    def from_manifest(cls, case_id: str, entry: Mapping[str, Any]) -> "CaseInfo":
        meta = entry.get("metadata", {})
        locations = {c: locs.astype(np.int32)
                     for c, locs in sampling.class_locations(entry, case_id).items()}
        return cls(case_id, tuple(int(s) for s in entry["shape"]),
                   tuple(float(s) for s in entry["spacing"]), entry.get("suv_factor"),
                   dict(entry["intensity"]), float(meta.get("dose_reduction_factor", 1.0)),
                   meta.get("count_scale"), locations, entry.get("noise"))


def data_config(data_cfg: DataConfig | Mapping[str, Any] | None = None) -> DataConfig:
    """A :class:`DataConfig` from itself, or from ``data_cfg`` (a mapping/``ConfigDict``, such
    as the training config's ``data`` section) over the schema's ``data`` section: a key the
    schema does not know is an error."""
    if isinstance(data_cfg, DataConfig):
        return data_cfg
    cfg = section("data", data_cfg)
    names = {f.name for f in dataclasses.fields(DataConfig)}
    return DataConfig(**{k: cfg[k] for k in names} | {
        "patch_size": tuple(int(p) for p in cfg["patch_size"]),
        "normalization": NormalizationConfig.from_config(cfg["normalization"]),
        "dose_augmentation": DoseConfig.from_config(cfg["dose_augmentation"])})


def load_cases(store_dir: str | Path, case_ids: Sequence[str] | None,
               manifest: Mapping[str, Any] | None = None) -> list[CaseInfo]:
    """:class:`CaseInfo` of ``case_ids`` (all manifest cases when ``None``), in that order."""
    cases = (manifest or store.read_manifest(store_dir))["cases"]
    case_ids = list(cases) if case_ids is None else list(case_ids)
    missing = [c for c in case_ids if c not in cases]
    if missing:
        raise KeyError(f"cases {missing[:5]} are not in store {store_dir}")
    if not case_ids:
        raise ValueError(f"no cases selected from store {store_dir}")
    return [CaseInfo.from_manifest(c, cases[c]) for c in case_ids]


def local_sample_indices(batch_index: int, local_batch_size: int, process_index: int = 0,
                         process_count: int = 1) -> np.ndarray:
    """Global sample indices of process ``process_index``'s slice of global batch
    ``batch_index``."""
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    first = (batch_index * process_count + process_index) * local_batch_size
    return np.arange(first, first + local_batch_size, dtype=np.int64)


# --- per-process lazy state (never pickled) ---------------------------------------------------

_PROCESS: dict[str, Any] = {"pid": None}


_THREAD = threading.local()


def _process_cache() -> dict[str, Any]:
    """Opened arrays, count scales and the TensorStore context of *this* process."""
    if _PROCESS["pid"] != os.getpid():  # new process (or a fork): nothing opened here yet
        _PROCESS.clear()
        _PROCESS.update(pid=os.getpid(), arrays={}, count_scales={}, contexts={})
    return _PROCESS


def _open(path: Path, cache_mb: int) -> ts.TensorStore:
    cache = _process_cache()
    key = (str(path), cache_mb)
    if key not in cache["arrays"]:
        if cache_mb not in cache["contexts"]:
            cache["contexts"][cache_mb] = ts.Context(
                {"cache_pool": {"total_bytes_limit": cache_mb * 2**20}})
        spec = store.array_spec(path) | {"open": True}
        try:
            cache["arrays"][key] = ts.open(spec, read=True,
                                           context=cache["contexts"][cache_mb]).result()
        except ValueError as e:
            raise store.StoreError(f"cannot open array {path}: {e}") from None
    return cache["arrays"][key]


def _scratch(shape: tuple[int, ...]) -> np.ndarray:
    """A float32 buffer reused by this thread (fresh buffers cost page faults every patch)."""
    buffers = _THREAD.__dict__.setdefault("buffers", {})
    if shape not in buffers:
        buffers[shape] = np.zeros(shape, np.float32)
    return buffers[shape]


def _worker_init(worker_index: int, worker_count: int, parent_pid: int) -> None:
    """Runs first in each grain worker: end with the parent process (even when it is killed),
    keep any jax import there off the accelerators, and build batches straight in shared
    memory (grain then passes them on without a copy)."""
    del worker_index, worker_count
    exit_with_parent(parent_pid)
    os.environ["JAX_PLATFORMS"] = "cpu"
    _process_cache()["batch_array"] = SharedMemoryArray


def _batch_array(shape: tuple[int, ...], dtype) -> np.ndarray:
    return _process_cache().get("batch_array", np.empty)(shape, dtype)


# --- patches ----------------------------------------------------------------------------------

class PatchSource:
    """Reads, augments and normalizes patches; picklable (paths and case facts only)."""

    def __init__(self, store_dir: str | Path, cases: Sequence[CaseInfo],
                 patch_size: Sequence[int], cfg: DataConfig, seed: int,
                 class_weights: Mapping[int, float] | None = None):
        if len(patch_size) != 3 or any(int(p) < 1 for p in patch_size):
            raise ValueError(f"patch_size must be 3 positive ints, got {tuple(patch_size)}")
        self.store_dir = Path(store_dir)
        self.cases = list(cases)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.cfg = cfg
        self.seed = int(seed)
        self.class_weights = None if class_weights is None else dict(class_weights)

    @property
    def _simulated_dose(self) -> bool:
        dose = self.cfg.dose_augmentation
        return dose.prob > 0.0 and dose.noise_model == "simulator"

    def epoch_case(self, index: int) -> int:
        """Case (position in ``cases``) of global sample ``index``: one permutation per epoch."""
        n = len(self.cases)
        epoch, pos = divmod(int(index), n)
        perm = np.random.default_rng([self.seed, _EPOCH_TAG, epoch]).permutation(n)
        return int(perm[pos])

    def _image(self, case: CaseInfo) -> ts.TensorStore:
        return _open(store.image_path(self.store_dir, case.case_id), self.cfg.cache_mb)

    def _label(self, case: CaseInfo) -> ts.TensorStore:
        return _open(store.label_path(self.store_dir, case.case_id), self.cfg.cache_mb)

    def count_scale(self, case: CaseInfo) -> float:
        """The case's count scale (metadata, else estimated once per process from a block)."""
        if case.count_scale is not None:
            return float(case.count_scale)
        cache = _process_cache()["count_scales"]
        key = (str(self.store_dir), case.case_id)
        if key not in cache:
            if case.locations:
                centre = np.median(np.concatenate(list(case.locations.values())), axis=0)
            else:
                centre = np.asarray(case.shape) / 2
            size = tuple(min(_COUNT_BLOCK, s) for s in case.shape)
            lower = np.clip(np.round(centre).astype(int) - np.asarray(size) // 2, 0,
                            np.asarray(case.shape) - size)
            box = sampling.PatchBox(tuple(int(v) for v in lower), size)
            block = self._image(case)[sampling.box_slices(box, case.shape)[0]].read().result()
            try:
                cache[key] = estimate_count_scale(block)
            except ValueError as e:
                raise ValueError(f"case {case.case_id}: {e}") from None
        return cache[key]

    def _noise(self, case: CaseInfo) -> ts.TensorStore:
        if case.noise is None:
            raise store.StoreError(
                f"case {case.case_id} has no noise map for the simulator dose model: ingest the "
                "store again, or set data.dose_augmentation.noise_model=independent")
        return _open(store.noise_path(self.store_dir, case.case_id), self.cfg.cache_mb)

    def _dose_noise(self, case: CaseInfo, maps: np.ndarray | None) -> DoseNoise:
        """The patch's :class:`DoseNoise` (its noise-map patch for the simulator model)."""
        if maps is None:
            return DoseNoise("independent", count_scale=self.count_scale(case))
        return DoseNoise.simulator(case.noise, maps)

    def read(self, requests: Sequence[tuple[int, int, bool]]) -> dict[str, np.ndarray]:
        """Patches for ``(sample index, case position, foreground)`` requests, stacked.

        Returns ``image`` (n, X, Y, Z, 1) float32 normalized and ``label`` (n, X, Y, Z) uint8,
        and with position channels ``position`` (n, 2, 3) float32 (each patch's place in its
        case, :func:`position.patch_position`). All reads are issued before the first is
        awaited, so TensorStore overlaps them.
        """
        n = len(requests)
        images = _batch_array((n, *self.patch_size, 1), np.float32)  # normalize fills it all
        labels = _batch_array((n, *self.patch_size), np.uint8)
        positions = np.empty((n, 2, 3), np.float32) if self.cfg.position_channels else None
        pending = []
        for index, case_pos, foreground in requests:
            case = self.cases[case_pos]
            rng = np.random.default_rng([self.seed, _SAMPLE_TAG, int(index)])
            box = sampling.sample_box(rng, case.shape, self.patch_size, case.locations,
                                      foreground, self.class_weights)
            src, dst = sampling.box_slices(box, case.shape)
            if positions is not None:
                positions[len(pending)] = position.patch_position(box.lower, case.shape,
                                                                  case.spacing)
            noise_read = self._noise(case)[src].read() if self._simulated_dose else None
            pending.append((case, rng, dst, self._image(case)[src].read(),
                            self._label(case)[src].read(), noise_read))
        for k, (case, rng, dst, image_read, label_read, noise_read) in enumerate(pending):
            raw = _scratch(self.patch_size)
            inside = all(d.stop - d.start == p for d, p in zip(dst, self.patch_size))
            if not inside:  # padding: image 0, label background
                raw.fill(0)
                labels[k].fill(0)
            try:
                raw[dst] = image_read.result()
                labels[k][dst] = label_read.result()
            except ValueError as e:
                raise store.StoreError(f"case {case.case_id}: reading a patch failed: {e}") \
                    from None
            if self.cfg.dose_augmentation.prob > 0.0:
                maps = None
                if noise_read is not None:
                    maps = np.zeros((*self.patch_size, 2), np.float32)  # no noise in padding
                    maps[dst] = noise_read.result()
                raw, _ = augment_dose(raw, rng, self.cfg.dose_augmentation,
                                      self._dose_noise(case, maps), case.stored_factor,
                                      inplace=True)
            normalize(raw, case.suv_factor, case.intensity, self.cfg.normalization,
                      case_id=case.case_id, out=images[k, ..., 0])
        batch = {"image": images, "label": labels}
        return batch if positions is None else batch | {"position": positions}


class _LocalBatch:
    """grain map: global batch index -> this process's slice of that batch."""

    def __init__(self, source: PatchSource, local_batch_size: int, process_index: int,
                 process_count: int):
        self.source = source
        self.local_batch_size = local_batch_size
        self.process_index = process_index
        self.process_count = process_count
        global_size = local_batch_size * process_count
        slots = sampling.foreground_slots(global_size, source.cfg.foreground_fraction)
        self.foreground = slots.reshape(process_count, local_batch_size)[process_index]

    def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
        indices = local_sample_indices(batch_index, self.local_batch_size, self.process_index,
                                       self.process_count)
        return self.source.read([(int(i), self.source.epoch_case(i), bool(fg))
                                 for i, fg in zip(indices, self.foreground)])


def _fingerprint(cases: Sequence[CaseInfo]) -> str:
    return hashlib.sha256(json.dumps([c.case_id for c in cases]).encode()).hexdigest()[:16]


class TrainIterator(Iterator[dict[str, np.ndarray]]):
    """Infinite iterator of local batches with a JSON state (see the module docstring)."""

    def __init__(self, batch_fn: _LocalBatch, workers: int):
        if workers < 0:
            raise ValueError(f"workers must be >= 0, got {workers}")
        self._batch_fn = batch_fn
        self._workers = workers
        self._global_batch = batch_fn.local_batch_size * batch_fn.process_count
        self._next_batch = 0
        self._it = None

    def _start(self) -> None:
        if not flags.FLAGS.is_parsed():  # grain reads absl flags; argparse programs never parse
            flags.FLAGS.mark_as_parsed()  # them (google/grain#1355): use their defaults
        cfg = self._batch_fn.source.cfg
        ds = grain.MapDataset.range(self._next_batch, _END).map(self._batch_fn)
        ids = ds.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads,
                                                   prefetch_buffer_size=cfg.read_buffer))
        if self._workers:
            ids = ids.mp_prefetch(grain.MultiprocessingOptions(
                num_workers=self._workers, per_worker_buffer_size=cfg.worker_buffer),
                worker_init_fn=functools.partial(_worker_init, parent_pid=os.getpid()))
        self._it = iter(ids)

    def __next__(self) -> dict[str, np.ndarray]:
        if self._it is None:
            self._start()
        batch = next(self._it)
        self._next_batch += 1
        return batch

    def get_state(self) -> dict[str, Any]:
        """JSON state: resumes after the last batch returned by ``next``."""
        source = self._batch_fn.source
        return {"version": STATE_VERSION, "next_sample": self._next_batch * self._global_batch,
                "seed": source.seed, "cases": _fingerprint(source.cases)}

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from ``get_state`` of any worker/process count)."""
        source = self._batch_fn.source
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"iterator state version {state.get('version')} is not "
                             f"{STATE_VERSION}")
        if state["seed"] != source.seed or state["cases"] != _fingerprint(source.cases):
            raise ValueError("iterator state belongs to another seed or case list "
                             f"(seed {state['seed']} vs {source.seed}); resume with the "
                             "run's own data config")
        next_batch, rest = divmod(int(state["next_sample"]), self._global_batch)
        if rest:
            raise ValueError(f"iterator state stops at sample {state['next_sample']}, inside a "
                             f"global batch of {self._global_batch}")
        self.close()
        self._next_batch = next_batch

    def close(self) -> None:
        """Stop the workers (a later ``next`` restarts them)."""
        if self._it is not None and hasattr(self._it, "close"):
            self._it.close()
        self._it = None

    def __enter__(self) -> "TrainIterator":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_train_iterator(store_dir: str | Path, case_ids: Sequence[str] | None, *,
                        local_batch_size: int, seed: int,
                        data_cfg: DataConfig | Mapping[str, Any] | None = None,
                        process_index: int = 0, process_count: int = 1,
                        workers: int = 0) -> TrainIterator:
    """Infinite training iterator of local batches ``{"image", "label"}``.

    ``image``: (local_batch_size, X, Y, Z, 1) float32 normalized; ``label``: (..., X, Y, Z)
    uint8, patches of ``data_cfg``'s ``patch_size``. ``case_ids`` (the same list on every
    process) are the training cases, ``None`` = all cases of the store. ``workers``: grain
    worker processes (0 = build in this process).
    """
    if local_batch_size < 1:
        raise ValueError(f"local_batch_size must be >= 1, got {local_batch_size}")
    cfg = data_config(data_cfg)
    manifest = store.read_manifest(store_dir)
    cases = load_cases(store_dir, case_ids, manifest)
    weights = None
    if cfg.class_sampling == "exposure":
        share = sampling.foreground_slots(local_batch_size * process_count,
                                          cfg.foreground_fraction).mean()
        weights, uniform, weighted = sampling.exposure_weights(
            [(c.shape, c.locations) for c in cases], cfg.patch_size, float(share), seed=seed)
        name = store.manifest_schema(manifest).name_of
        log.info("class sampling by exposure (organ: weight, share of patches holding it, "
                 "uniform -> weighted): %s", ", ".join(
                     f"{name(c)} {w:.2f} {uniform[c]:.2f}->{weighted[c]:.2f}"
                     for c, w in weights.items()))
    source = PatchSource(store_dir, cases, cfg.patch_size, cfg, seed, weights)
    return TrainIterator(_LocalBatch(source, local_batch_size, process_index, process_count),
                         workers)


# --- validation -------------------------------------------------------------------------------

def make_val_cases(store_dir: str | Path, case_ids: Sequence[str] | None,
                   data_cfg: DataConfig | Mapping[str, Any] | None = None, *,
                   process_index: int = 0, process_count: int = 1
                   ) -> Iterator[dict[str, Any]]:
    """Whole normalized cases, in order (process ``p`` takes cases ``p::process_count``).

    Yields ``{"case_id", "image": (X, Y, Z, 1) float32, "label": (X, Y, Z) uint8, "meta"}``
    with ``meta`` the manifest entry (spacing, affine, metadata, suv_factor, ...).
    """
    cfg = data_config(data_cfg)
    manifest = store.read_manifest(store_dir)
    for case in load_cases(store_dir, case_ids, manifest)[process_index::process_count]:
        image = np.empty((*case.shape, 1), np.float32)
        normalize(_open(store.image_path(store_dir, case.case_id), cfg.cache_mb).read().result(),
                  case.suv_factor, case.intensity, cfg.normalization, case_id=case.case_id,
                  out=image[..., 0])
        label = _open(store.label_path(store_dir, case.case_id), cfg.cache_mb).read().result()
        yield {"case_id": case.case_id, "image": image, "label": label,
               "meta": manifest["cases"][case.case_id]}


def make_val_patches(store_dir: str | Path, case_ids: Sequence[str] | None, *,
                     patch_size: Sequence[int], patches_per_case: int, seed: int = 0,
                     data_cfg: DataConfig | Mapping[str, Any] | None = None
                     ) -> dict[str, np.ndarray]:
    """A fixed set of validation patches (no dose augmentation), stacked like a batch.

    Each case gets ``patches_per_case`` patches, with the training foreground fraction.
    """
    cfg = dataclasses.replace(data_config(data_cfg),
                              dose_augmentation=DoseConfig.from_config({"prob": 0.0}))
    cases = load_cases(store_dir, case_ids)
    source = PatchSource(store_dir, cases, patch_size, cfg, seed)
    slots = sampling.foreground_slots(patches_per_case, cfg.foreground_fraction)
    return source.read([(c * patches_per_case + k, c, bool(slots[k]))
                        for c in range(len(cases)) for k in range(patches_per_case)])
