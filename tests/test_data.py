import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ented_cli.errors import InputError
from ented_cli.train.data import (
    PairDataset,
    load_rgb,
    load_training_records,
    read_face_csv,
)


@pytest.fixture(scope="module")
def records(shared_data):
    return load_training_records(shared_data)


def test_celeba_csv_rows_point_at_files_under_the_root(shared_data):
    recs = read_face_csv(shared_data / "celeba-wild.csv", shared_data)
    assert len(recs) == 6285
    assert {r.split for r in recs} == {"train", "val"}
    assert all(r.path.is_file() for r in recs[::250])
    assert all(r.identity.startswith("celeba-") for r in recs)


def test_studio_csv_without_split_column_is_train(shared_data):
    recs = read_face_csv(shared_data / "studio.csv", shared_data)
    assert len(recs) == 108 and {r.split for r in recs} == {"train"}


def test_training_records_combine_all_three_sets(records):
    prefixes = {r.identity.split("-")[0] for r in records}
    assert prefixes == {"celeba", "cf17", "radiate"}


def test_missing_column_is_a_user_error(tmp_path):
    bad = tmp_path / "faces.csv"
    bad.write_text("path,identity\na.jpg,x\n")
    with pytest.raises(InputError, match="faces.csv: missing column"):
        read_face_csv(bad, tmp_path)


def test_folder_without_csvs_is_a_user_error(tmp_path):
    with pytest.raises(InputError, match="celeba-wild.csv"):
        load_training_records(tmp_path)


def test_unreadable_image_is_a_user_error(tmp_path):
    csv = tmp_path / "faces.csv"
    csv.write_text("path,identity,native_px,id_consistency\nmissing.jpg,x,300,0.9\n")
    ds = PairDataset(read_face_csv(csv, tmp_path))
    with pytest.raises(InputError, match="missing.jpg"):
        ds[0]


def test_references_are_other_photos_of_the_same_identity(records):
    ds = PairDataset(records, self_ref_prob=0.0)
    for i in range(0, len(ds), 7):
        gt, ref = ds.pick(i)
        if len(ds.by_identity[gt.identity]) == 1:
            assert ref is None  # nobody else to pair with: self-reference
        else:
            assert ref.identity == gt.identity and ref.path != gt.path


def _coarse_corr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Correlation at 32×32, allowing a mirror: robust to small shifts and colour changes."""
    a = F.avg_pool2d(a[None], 8).flatten()
    return max(
        float(np.corrcoef(a, F.avg_pool2d(r[None], 8).flatten())[0, 1])
        for r in (b, torch.flip(b, dims=[2]))
    )


def test_self_reference_is_an_augmented_copy_of_the_gt(records):
    selfref = PairDataset(records, self_ref_prob=1.0, hflip=False)
    other = PairDataset(records, self_ref_prob=0.0, hflip=False)
    same, different = [], []
    for i in range(0, 7000, 1000):
        assert selfref.pick(i)[1] is None
        item = selfref[i]
        assert not torch.equal(item["gt"], item["ref"])  # augmented, not a plain copy
        same.append(_coarse_corr(item["gt"], item["ref"]))
        different.append(_coarse_corr(item["gt"], other[i]["ref"]))
    assert min(same) > 0.7
    assert np.mean(same) > np.mean(different) + 0.3


def test_item_ref_is_the_picked_photo(records):
    ds = PairDataset(records, self_ref_prob=0.0, hflip=False)
    gt_rec, ref_rec = ds.pick(10)
    item = ds[10]
    assert item["identity"] == gt_rec.identity
    expected = torch.from_numpy(load_rgb(ref_rec.path, 256).transpose(2, 0, 1).copy()) * 2 - 1
    assert torch.equal(item["ref"], expected)


def test_items_are_256_tensors_in_range_with_a_resolution_weight(records):
    ds = PairDataset(records)
    for i in (0, len(ds) - 1):  # the last records are studio faces stored at 512
        item = ds[i]
        for key in ("gt", "ref"):
            t = item[key]
            assert t.shape == (3, 256, 256) and t.dtype == torch.float32
            assert t.min() >= -1 and t.max() <= 1
        native = ds.records[i].native_px
        assert item["weight"] == pytest.approx(min(1.0, max(0.5, native / 256)))
    assert min(ds.weights) == 0.5 and max(ds.weights) == 1.0


def test_low_id_consistency_faces_are_dropped(records):
    ds = PairDataset(records)
    assert all(r.id_consistency >= 0.2 for r in ds.records)
    dropped = [r for r in records if r.split == "train" and r.id_consistency < 0.2]
    assert dropped and len(ds) == sum(r.split == "train" for r in records) - len(dropped)
    strict = PairDataset(records, min_id_consistency=0.5, min_native_px=256)
    assert len(strict) < len(ds)
    assert all(r.native_px >= 256 for r in strict.records)


def test_val_split_shares_no_identity_with_train(records):
    val, train = PairDataset(records, split="val"), PairDataset(records, split="train")
    assert len(val.identities) == 20
    assert not set(val.identities) & set(train.identities)


def test_same_seed_and_epoch_give_the_same_items(records):
    a, b = PairDataset(records, seed=3), PairDataset(records, seed=3)
    picks = [a.pick(i) for i in range(0, len(a), 50)]
    assert picks == [b.pick(i) for i in range(0, len(b), 50)]
    for key in ("gt", "ref"):
        assert torch.equal(a[123][key], b[123][key])


def test_new_epoch_or_seed_draws_new_references(records):
    ds = PairDataset(records, seed=3)
    first = [ds.pick(i) for i in range(0, len(ds), 50)]
    ds.set_epoch(1)
    assert [ds.pick(i) for i in range(0, len(ds), 50)] != first
    other = PairDataset(records, seed=4)
    assert [other.pick(i) for i in range(0, len(other), 50)] != first


def test_set_epoch_reaches_persistent_loader_workers(records):
    # The trainer keeps its workers alive between epochs; they must still see the new epoch.
    ds = PairDataset(records, seed=0, hflip=False)
    subset = torch.utils.data.Subset(ds, [5])
    loader = torch.utils.data.DataLoader(
        subset, batch_size=1, num_workers=1, persistent_workers=True
    )
    seen = []
    for epoch in range(4):
        ds.set_epoch(epoch)
        seen.append(next(iter(loader))["ref"])
        assert torch.equal(seen[-1][0], ds[5]["ref"])  # worker and main process agree
    assert any(not torch.equal(seen[0], s) for s in seen[1:])
