"""`ented prepare-data` turns raw photos of people into training crops in the shared CSV format."""

import shutil

import cv2
from click.testing import CliRunner

from ented_cli.cli.main import main
from ented_cli.train.data import PairDataset, load_training_records
from tests.conftest import needs_shared


@needs_shared
def test_raw_photos_become_aligned_crops_and_a_training_csv(shared_data, tmp_path):
    src = tmp_path / "photos"
    for person in ("001", "002"):
        (src / f"person{person}").mkdir(parents=True)
        for expr in ("neutral", "smiling"):
            shutil.copy(
                shared_data / "london" / "raw" / f"{person}_{expr}.jpg",
                src / f"person{person}" / f"{expr}.jpg",
            )
    (src / "person002" / "notes.txt").write_text("not a photo")
    dst = tmp_path / "data"
    result = CliRunner().invoke(main, ["prepare-data", str(src), str(dst), "--val-fraction", "0"])
    assert result.exit_code == 0, result.output

    records = load_training_records(dst)
    assert len(records) == 4 and {r.identity for r in records} == {"person001", "person002"}
    for r in records:
        assert cv2.imread(str(r.path)).shape == (256, 256, 3)
        assert r.native_px > 256  # london faces are large: crops are at native resolution
        assert r.id_consistency > 0.9  # the other photo is the same person
    pair = PairDataset(records, "train", self_ref_prob=0.0)[0]
    assert pair["gt"].shape == (3, 256, 256) and pair["ref"].shape == (3, 256, 256)


def test_a_folder_without_person_subfolders_is_a_clear_error(tmp_path):
    (tmp_path / "flat").mkdir()
    result = CliRunner().invoke(
        main, ["prepare-data", str(tmp_path / "flat"), str(tmp_path / "out")]
    )
    assert result.exit_code == 1
    assert "no sub-folders" in result.output
