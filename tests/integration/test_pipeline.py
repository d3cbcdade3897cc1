"""The grain training pipeline on a tiny store: determinism, state, sharding, device feed."""

import hashlib
import itertools
import time

import numpy as np
import pytest
from store_fixtures import make_tiny_store

from petseg_jax.data import store
from petseg_jax.data.normalization import NormalizationConfig, normalize
from petseg_jax.data.pipeline import (data_config, local_sample_indices,
                                      make_train_iterator, make_val_cases, make_val_patches)

PATCH = (16, 16, 16)
PATCH_CFG = {"patch_size": PATCH}
DOSE_ON = {"dose_augmentation": {"prob": 0.7}}


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return make_tiny_store(tmp_path_factory.mktemp("store"))


def _batches(store_dir, n, *, state=None, workers=0, patch_size=PATCH, data_cfg=DOSE_ON, **kw):
    kw = dict(local_batch_size=2, seed=3) | kw
    data_cfg = data_cfg | {"patch_size": patch_size}
    with make_train_iterator(store_dir, None, workers=workers, data_cfg=data_cfg, **kw) as it:
        if state is not None:
            it.set_state(state)
        out = [next(it) for _ in range(n)]
        return out, it.get_state()


def _digest(batches):
    return [hashlib.sha256(b["image"].tobytes() + b["label"].tobytes()).hexdigest()
            for b in batches]


def test_batches_shape_dtype_and_values(tiny_store):
    batches, state = _batches(tiny_store, 6, local_batch_size=3)
    for b in batches:
        assert b["image"].shape == (3, *PATCH, 1) and b["image"].dtype == np.float32
        assert b["label"].shape == (3, *PATCH) and b["label"].dtype == np.uint8
        assert np.isfinite(b["image"]).all() and b["label"].max() <= 5
        assert b["label"][0].any()  # slot 0 of each batch is class-centred (1/3 of 3)
    assert state["next_sample"] == 18


def test_patches_larger_than_the_volume_are_padded(tiny_store):
    big = (48, 40, 56)  # the volume is 40 x 32 x 48: 4 voxels of padding on each side
    batches, _ = _batches(tiny_store, 2, patch_size=big, local_batch_size=2)
    for b in batches:
        for pad in (np.s_[:, :4], np.s_[:, -4:], np.s_[:, :, :4], np.s_[:, :, :, -4:]):
            assert (b["label"][pad] == 0).all() and (b["image"][pad] == 0).all()
        assert b["label"][:, 4:-4, 4:-4, 4:-4].any()


def test_position_channels_add_each_patch_place_and_change_nothing_else(tiny_store):
    plain, _ = _batches(tiny_store, 2)
    placed, _ = _batches(tiny_store, 2, data_cfg=DOSE_ON | {"position_channels": "xy"})
    spacing = store.read_manifest(tiny_store)["spacing"]
    for a, b in zip(plain, placed):
        assert "position" not in a and b["position"].shape == (2, 2, 3)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
        np.testing.assert_allclose(b["position"][:, 1], np.array([spacing] * 2) / 1000, rtol=1e-6)
    # a patch larger than the volume is centred on it: its middle voxel sits at position 0
    big = (48, 40, 56)
    centred, _ = _batches(tiny_store, 1, patch_size=big,
                          data_cfg={"position_channels": "xyz"})
    origin, step = centred[0]["position"][:, 0], centred[0]["position"][:, 1]
    np.testing.assert_allclose(origin + step * (np.array(big) - 1) / 2, 0.0, atol=1e-6)


def test_dose_augmentation_changes_images_not_labels(tiny_store):
    plain, _ = _batches(tiny_store, 3, data_cfg={"dose_augmentation": {"prob": 0.0}})
    noisy, _ = _batches(tiny_store, 3, data_cfg={"dose_augmentation": {"prob": 1.0,
                                                                         "min_factor": 20.0}})
    for a, b in zip(plain, noisy):
        np.testing.assert_array_equal(a["label"], b["label"])
        assert not np.array_equal(a["image"], b["image"])


def test_same_seed_same_batches_for_0_and_2_workers_and_state_restores(tiny_store):
    reference, _ = _batches(tiny_store, 6)
    first, state = _batches(tiny_store, 3, workers=2)
    assert _digest(first) == _digest(reference[:3])
    # the state of a 2-worker run resumes in a 0-worker run exactly where it stopped
    rest, _ = _batches(tiny_store, 3, state=state)
    assert _digest(rest) == _digest(reference[3:])
    other_seed, _ = _batches(tiny_store, 1, seed=4)
    assert _digest(other_seed) != _digest(reference[:1])


def test_state_restore_mid_epoch(tiny_store):
    reference, _ = _batches(tiny_store, 7, local_batch_size=1)  # 3 cases: epochs of 3 samples
    _, state = _batches(tiny_store, 4, local_batch_size=1)
    assert state["next_sample"] == 4
    rest, _ = _batches(tiny_store, 3, local_batch_size=1, state=state)
    assert _digest(rest) == _digest(reference[4:])
    with pytest.raises(ValueError, match="seed"):
        _batches(tiny_store, 1, local_batch_size=1, seed=9, state=state)
    with pytest.raises(ValueError, match="inside a global batch"):
        _batches(tiny_store, 1, local_batch_size=3, state=state)


def test_multi_process_shards_are_disjoint_complete_and_equal_one_process(tiny_store):
    processes, local, n_batches = 3, 2, 4
    seen = [local_sample_indices(b, local, p, processes)
            for b in range(n_batches) for p in range(processes)]
    flat = np.concatenate(seen)
    assert len(set(flat.tolist())) == flat.size  # disjoint
    assert sorted(flat.tolist()) == list(range(n_batches * processes * local))  # complete
    single, _ = _batches(tiny_store, n_batches, local_batch_size=processes * local)
    shards = [_batches(tiny_store, n_batches, local_batch_size=local, process_index=p,
                       process_count=processes)[0] for p in range(processes)]
    for b in range(n_batches):
        for key in ("image", "label"):
            np.testing.assert_array_equal(
                np.concatenate([shards[p][b][key] for p in range(processes)]), single[b][key])


def test_every_case_once_per_epoch(tiny_store):
    from petseg_jax.data.pipeline import PatchSource, load_cases
    source = PatchSource(tiny_store, load_cases(tiny_store, None), PATCH, data_config(), seed=0)
    epochs = [sorted(source.epoch_case(i) for i in range(e * 3, e * 3 + 3)) for e in range(4)]
    assert epochs == [[0, 1, 2]] * 4
    assert len({tuple(source.epoch_case(i) for i in range(e * 3, e * 3 + 3))
                for e in range(8)}) > 1  # and the order changes between epochs


def test_val_cases_whole_and_normalized(tiny_store):
    manifest = store.read_manifest(tiny_store)
    cases = list(make_val_cases(tiny_store, ["case_001", "case_002"], {"normalization":
                                                                     {"mode": "case"}}))
    assert [c["case_id"] for c in cases] == ["case_001", "case_002"]
    entry = manifest["cases"]["case_001"]
    raw = store.read_array(store.image_path(tiny_store, "case_001"))
    expected = normalize(raw, entry["suv_factor"], entry["intensity"],
                         NormalizationConfig.from_config({"mode": "case"}))
    np.testing.assert_array_equal(cases[0]["image"][..., 0], expected)
    np.testing.assert_array_equal(cases[0]["label"],
                                  store.read_array(store.label_path(tiny_store, "case_001")))
    assert cases[0]["meta"]["spacing"] == entry["spacing"]
    shards = [[c["case_id"] for c in make_val_cases(tiny_store, None, process_index=p,
                                                    process_count=2)] for p in range(2)]
    assert shards == [["case_000", "case_002"], ["case_001"]]


def test_val_patches_fixed(tiny_store):
    a = make_val_patches(tiny_store, None, patch_size=PATCH, patches_per_case=3, data_cfg=DOSE_ON)
    b = make_val_patches(tiny_store, None, patch_size=PATCH, patches_per_case=3)
    assert a["image"].shape == (9, *PATCH, 1)
    np.testing.assert_array_equal(a["image"], b["image"])  # no dose noise on validation
    assert all(a["label"][k].any() for k in (0, 3, 6))  # the class-centred slot of each case


def test_exposure_class_sampling_is_deterministic_and_centres_on_classes(tiny_store):
    exposure = DOSE_ON | {"class_sampling": "exposure"}
    a, _ = _batches(tiny_store, 4, data_cfg=exposure)
    b, _ = _batches(tiny_store, 4, data_cfg=exposure)
    uniform, _ = _batches(tiny_store, 4)
    assert _digest(a) == _digest(b) and _digest(a) != _digest(uniform)
    assert all(batch["label"][0].any() for batch in a)  # the class-centred slot


def test_bad_inputs(tiny_store, tmp_path):
    with pytest.raises(KeyError, match="nope"):
        make_train_iterator(tiny_store, ["nope"], data_cfg=PATCH_CFG, local_batch_size=1, seed=0)
    with pytest.raises(ValueError, match="patch_size"):
        make_train_iterator(tiny_store, None, data_cfg={"patch_size": (8, 8)}, local_batch_size=1,
                            seed=0)
    with pytest.raises(store.StoreError, match="does not exist"):
        make_train_iterator(tmp_path / "none", None, data_cfg=PATCH_CFG, local_batch_size=1,
                            seed=0)
    with pytest.raises(ValueError, match="did you mean 'data.patch_size'"):
        data_config({"patchsize": 3})
    with pytest.raises(ValueError, match="did you mean 'data.dose_augmentation.prob'"):
        data_config({"dose_augmentation": {"probability": 0.5}})
    with pytest.raises(ValueError, match="class_sampling must be one of"):
        data_config({"class_sampling": "balanced"})


def test_data_config_from_the_training_config_section():
    import ml_collections
    section = ml_collections.ConfigDict({
        "patch_size": (8, 8, 8), "workers": 4, "foreground_fraction": 0.5,
        "normalization": {"mode": "case", "transform": "clip", "clip_percentile": 99.5},
        "dose_augmentation": {"prob": 0.25, "min_factor": 1.0, "max_factor": 100.0,
                              "distribution": "loguniform"}})
    cfg = data_config(section)
    assert cfg.foreground_fraction == 0.5 and cfg.dose_augmentation.prob == 0.25
    assert cfg.normalization == NormalizationConfig.from_config({"mode": "case",
                                                                 "transform": "clip"})
    assert cfg.patch_size == (8, 8, 8) and data_config(cfg) is cfg


class _Counter:
    """A minimal stateful iterator: batch n is {"x": [n, n]}."""

    def __init__(self, fail_at=None):
        self.n, self.fail_at = 0, fail_at

    def __next__(self):
        if self.n == self.fail_at:
            raise RuntimeError("broken batch")
        self.n += 1
        return {"x": np.full((2, 3), self.n - 1, np.float32)}

    def get_state(self):
        return {"n": self.n}

    def set_state(self, state):
        self.n = state["n"]


@pytest.fixture(scope="module")
def data_sharding():
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec
    return NamedSharding(Mesh(np.array(jax.devices()[:1]), ("data",)), PartitionSpec("data"))


def test_device_prefetcher_state_is_what_the_consumer_took(data_sharding):
    from petseg_jax.training.device_feed import DevicePrefetcher
    counter = _Counter()
    with DevicePrefetcher(counter, data_sharding, size=3) as feed:
        assert feed.get_state() == {"n": 0}
        first = [int(next(feed)["x"][0, 0]) for _ in range(2)]
        deadline = time.monotonic() + 10
        while counter.n < 4 and time.monotonic() < deadline:  # let the thread run ahead
            time.sleep(0.01)
        assert counter.n >= 4
        assert first == [0, 1] and feed.get_state() == {"n": 2}
        feed.set_state({"n": 10})
        assert int(next(feed)["x"][0, 0]) == 10 and feed.get_state() == {"n": 11}
    with DevicePrefetcher(_Counter(fail_at=1), data_sharding) as feed:
        next(feed)
        with pytest.raises(RuntimeError, match="broken batch"):
            next(feed)


def test_device_prefetcher_on_the_pipeline_resumes_exactly(tiny_store, data_sharding):
    from petseg_jax.training.device_feed import DevicePrefetcher

    def feed():
        return DevicePrefetcher(make_train_iterator(tiny_store, None, data_cfg=PATCH_CFG,
                                                    local_batch_size=2, seed=5), data_sharding)
    with feed() as a:
        taken = [next(a) for _ in range(2)]
        state = a.get_state()
        following = [np.asarray(next(a)["image"]) for _ in range(2)]
    assert taken[0]["image"].sharding == data_sharding and taken[0]["image"].shape == (2, *PATCH, 1)
    assert state["next_sample"] == 4
    with feed() as b:
        b.set_state(state)
        for expected, got in zip(following, itertools.islice(b, 2)):
            np.testing.assert_array_equal(np.asarray(got["image"]), expected)


def test_bench_loader_cli_reports_and_hashes_the_first_batches(tiny_store, capsys):
    import json

    from petseg_jax.bench.__main__ import main
    argv = ["loader", "--store", str(tiny_store), "--patch", *map(str, PATCH), "--batch", "2",
            "--batches", "3", "--warmup", "2", "--seed", "3", "--dose-prob", "0.7"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["patches_per_s"] > 0 and result["mb_per_s"] > 0 and result["batches"] == 3
    assert result["rss_mb_start"] > 0 and len(result["rss_mb_trace"]) == 3
    expected, _ = _batches(tiny_store, 4)  # same seed, dose probability and batch as DOSE_ON
    digest = hashlib.sha256()
    for b in expected:
        digest.update(b["image"].tobytes())
        digest.update(b["label"].tobytes())
    assert result["first_batches_sha256"] == digest.hexdigest()
    assert main(["nope"]) == 2
