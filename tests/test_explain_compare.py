"""`ented explain --compare`: weight-path lengths, learning checkpoints and stability on
hand-made point maps, and the command on two tiny seeded runs (no shared data)."""

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ented_cli.cli.main import main
from ented_cli.explain.compare import RunKnowledge, foreground_cells, weight_path_lengths
from ented_cli.model.config import preset
from ented_cli.model.generator import EntedGenerator


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads; on a busy machine they lose a lot to them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def state(w: list[float]) -> dict:
    return {"a": torch.tensor(w[:2]), "b": torch.tensor(w[2:]), "steps": torch.tensor(3)}


def test_weight_path_of_identical_checkpoints_is_zero():
    w = [3.0, 0.0, 4.0, 0.0]  # ‖w_0‖ = 5
    np.testing.assert_allclose(weight_path_lengths([state(w)] * 3), [0, 0, 0])


def test_weight_path_grows_with_the_distance_travelled():
    w0, w1, w2 = [3.0, 0.0, 4.0, 0.0], [3.0, 1.0, 4.0, 0.0], [3.0, 1.0, 4.0, 3.0]
    np.testing.assert_allclose(weight_path_lengths([state(w0), state(w1)]), [0, 0.2])
    np.testing.assert_allclose(weight_path_lengths([state(w0), state(w2)]), [0, np.sqrt(10) / 5])
    # Out and back again: the path counts both legs, not the net displacement.
    np.testing.assert_allclose(
        weight_path_lengths([state(w0), state(w1), state(w0)]), [0, 0.2, 0.4]
    )


def run_with(points: list[np.ndarray], path: list[float]) -> RunKnowledge:
    """A run of one face on a 4 x 4 grid whose centre 2 x 2 cells are the foreground."""
    fg = np.zeros((4, 4), bool)
    fg[1:3, 1:3] = True
    stacked = np.stack([p.reshape(1, 4, 4) for p in points])
    return RunKnowledge(
        "run", [f"ckpt{k}" for k in range(len(points))], stacked, fg, np.array(path)
    )


def grid(*cells: tuple[int, int]) -> np.ndarray:
    g = np.zeros((4, 4), bool)
    for c in cells:
        g[c] = True
    return g


def test_a_point_learned_at_checkpoint_k_gets_the_path_length_up_to_k():
    path = [0.0, 0.1, 0.25, 0.4]
    run = run_with([grid(), grid(), grid((1, 1)), grid((1, 1))], path)
    assert run.learned_at().tolist() == [2]
    assert run.d_mean == pytest.approx(0.25) and run.d_std == pytest.approx(0.0)
    # Learned at 1, forgotten at 2, learned again at 3: it counts from 3, where it stays.
    run = run_with([grid(), grid((1, 2)), grid(), grid((1, 2), (2, 2))], path)
    assert run.d_mean == pytest.approx(0.4)
    # Two points learned at 1 and 3: D_mean and D_std over the points.
    run = run_with([grid(), grid((1, 1)), grid((1, 1)), grid((1, 1), (2, 1))], path)
    assert run.d_mean == pytest.approx(0.25) and run.d_std == pytest.approx(0.15)
    # A point of the starting weights that stays is learned at 1: nothing is learned at w_0.
    run = run_with([grid((1, 1)), grid((1, 1)), grid((1, 1)), grid((1, 1))], path)
    assert run.learned_at().tolist() == [1] and run.d_mean == pytest.approx(0.1)


def test_rho_is_one_when_nothing_is_forgotten_and_less_when_a_point_is():
    path = [0.0, 0.1, 0.2]
    kept = run_with([grid((1, 1)), grid((1, 1), (2, 2)), grid((1, 1), (2, 2))], path)
    assert kept.rho == 1.0
    forgot = run_with([grid((1, 1)), grid((1, 1), (2, 2)), grid((2, 2))], path)
    assert forgot.rho == pytest.approx(0.5)
    # The starting weights' points are not learned ones: dropping them costs no stability.
    dropped = run_with([grid((1, 1), (1, 2)), grid((2, 2)), grid((2, 2))], path)
    assert dropped.rho == 1.0
    # Background points count for λ, not for ρ or D.
    with_bg = run_with([grid(), grid((0, 0)), grid((0, 0), (1, 1))], path)
    assert (with_bg.n_fg, with_bg.n_bg, with_bg.ratio, with_bg.rho) == (1, 1, 0.5, 1.0)
    assert with_bg.learned_at().tolist() == [2]


def test_foreground_is_the_face_ellipse_in_cells():
    fg = foreground_cells(16)
    assert fg.shape == (16, 16) and fg[9, 8] and not fg[0, 0] and not fg[15, 8]
    assert 40 < fg.sum() < 100


# ---------------------------------------------------------------------------- the command
def ented(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def save_run(folder, seed: int, checkpoints: int = 3) -> None:
    """A tiny model's run: seeded weights drifting a little at every checkpoint."""
    torch.manual_seed(seed)
    config = preset("tiny")
    config.use_guide = False
    model = EntedGenerator(config)
    folder.mkdir()
    for k in range(checkpoints):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * k * torch.randn_like(p))
        torch.save(
            {"G": model.state_dict(), "model_config": config.to_dict(), "step": k},
            folder / f"epoch-{k}.pt",
        )


@pytest.fixture
def face(tmp_path):
    """An aligned 256 crop: a light oval with dark eyes and mouth where alignment puts them."""
    img = np.full((256, 256, 3), 60, np.uint8)
    cv2.ellipse(img, (128, 140), (70, 95), 0, 0, 360, (150, 170, 200), -1)
    for centre in ((96, 120), (159, 120)):
        cv2.ellipse(img, centre, (14, 7), 0, 0, 360, (40, 40, 40), -1)
    cv2.ellipse(img, (128, 186), (28, 8), 0, 0, 360, (60, 60, 140), -1)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), img)
    return path


def test_compare_prints_a_row_per_run_and_the_verdicts(tmp_path, face):
    save_run(tmp_path / "distilled", seed=1)
    save_run(tmp_path / "data", seed=2, checkpoints=2)
    args = ("explain", "--compare", tmp_path / "distilled", tmp_path / "data", face, "--aligned")
    result = ented(*args, "--steps", 2, "--samples", 1, "--device", "cpu")
    assert result.exit_code == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith(("A ", "B "))]
    assert len(rows) == 2
    assert str(tmp_path / "distilled") in rows[0] and str(tmp_path / "data") in rows[1]
    assert rows[0].split()[2] == "3" and rows[1].split()[2] == "2"  # checkpoints per run
    for hypothesis in ("H1", "H2", "H3"):
        assert hypothesis + ":" in result.stdout

    result = ented(*args, "--steps", 2, "--samples", 1, "--device", "cpu", "--json", "-q", "--maps")
    assert result.exit_code == 0, result.stderr
    a, b, verdict = [json.loads(line) for line in result.stdout.splitlines()]
    assert a["run"] == str(tmp_path / "distilled") and b["checkpoints"] == 2
    assert np.array(a["points"]).shape == (3, 1, 16, 16)  # checkpoint x face x cells x cells
    assert a["path_lengths"][0] == 0 and a["path_lengths"][2] > a["path_lengths"][1] > 0
    assert set(verdict["compare"]) >= {"A", "B", "n_fg", "ratio", "d_mean", "d_std", "rho"}


def test_a_run_with_one_checkpoint_is_a_usage_error_naming_it(tmp_path, face):
    save_run(tmp_path / "good", seed=1, checkpoints=2)
    save_run(tmp_path / "short", seed=2, checkpoints=1)
    result = ented("explain", "--compare", tmp_path / "good", tmp_path / "short", face)
    assert result.exit_code == 2
    assert str(tmp_path / "short") in result.stderr and "at least 2" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_missing_run_folder_is_a_usage_error_naming_it(tmp_path, face):
    save_run(tmp_path / "good", seed=1, checkpoints=2)
    result = ented("explain", "--compare", tmp_path / "nope", tmp_path / "good", face)
    assert result.exit_code == 2
    assert str(tmp_path / "nope") in result.stderr and "no such run folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
