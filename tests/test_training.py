"""Training pipeline: the model learns, checkpoints resume, exported weights load back exactly."""

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ented_cli.model.config import preset
from ented_cli.model.generator import EntedGenerator
from ented_cli.model.restorer import EntedRestorer, network_rgb
from ented_cli.model.weight_lookup import resolve_weights
from ented_cli.model.weights import load_state_dict, save_weight_set
from ented_cli.train.config import TrainConfig
from ented_cli.train.degrade import degrade
from tests.conftest import EXAMPLES, needs_shared


def example_faces() -> torch.Tensor:
    """Aligned-size crops of the bundled photos (exact alignment does not matter here)."""
    crops = []
    for name, (x, y) in (("astronaut.png", (150, 20)), ("grace_hopper.jpg", (120, 60))):
        img = cv2.imread(str(EXAMPLES / name))[y : y + 200, x : x + 200]
        crops.append(cv2.resize(img, (256, 256), interpolation=cv2.INTER_CUBIC)[..., ::-1])
    t = torch.from_numpy(np.stack(crops).astype(np.float32) / 255).permute(0, 3, 1, 2)
    return t * 2 - 1


@pytest.mark.slow
def test_tiny_generator_overfits_a_handful_of_pairs():
    torch.manual_seed(0)
    gt = example_faces()
    lq = degrade(gt, seed=1)
    g = EntedGenerator(preset("tiny"))
    opt = torch.optim.Adam(g.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = F.l1_loss(g(lq, gt.flip(-1), 0.5), gt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) / 3


def test_exported_weights_load_back_bit_exact_and_restore_identically(tmp_path):
    torch.manual_seed(0)
    cfg = preset("tiny")
    g = EntedGenerator(cfg).eval()
    manifest = save_weight_set(g.state_dict(), tmp_path, "tiny-test", cfg.to_dict())
    ws = resolve_weights(str(manifest))
    state = load_state_dict(ws)
    for k, v in g.state_dict().items():
        assert torch.equal(state[k], v.half()), k
    state32 = {k: v.float() for k, v in state.items()}
    g.load_state_dict(state32)
    faces = ((example_faces() + 1) / 2).permute(0, 2, 3, 1).numpy()
    with torch.no_grad():
        direct = (
            g(torch.from_numpy(faces).permute(0, 3, 1, 2) * 2 - 1, None, 0.5).clamp(-1, 1) + 1
        ) / 2
    # The restorer takes and gives BGR (the pipeline's order); the generator works in RGB.
    restored = network_rgb(EntedRestorer(ws, "cpu").restore(network_rgb(faces), [[], []], 0.5))
    np.testing.assert_allclose(restored, direct.permute(0, 2, 3, 1).numpy(), atol=1e-5)


@pytest.mark.slow
def test_bundled_preview_weights_respond_to_fidelity_and_reference():
    restorer = EntedRestorer(resolve_weights(None), "cpu")
    faces = network_rgb(((example_faces() + 1) / 2).permute(0, 2, 3, 1).numpy())  # BGR
    restorer.add_reference("a", faces[0])
    restorer.add_reference("b", faces[1])
    low = restorer.restore(faces[:1], [["a"]], 0.0)
    high = restorer.restore(faces[:1], [["a"]], 1.0)
    other = restorer.restore(faces[:1], [["b"]], 0.0)
    assert np.abs(low - high).mean() > 2e-3
    assert np.abs(low - other).mean() > 1e-3


@pytest.mark.slow
@needs_shared
def test_trainer_runs_both_stages_resumes_and_exports(shared_data, vgg_weights, tmp_path):
    from ented_cli.train.config import TrainConfig
    from ented_cli.train.trainer import Trainer

    cfg = {
        "model": "tiny",
        "data_root": str(shared_data),
        "out_dir": str(tmp_path / "run"),
        "batch_size": 2,
        "stage1_steps": 2,
        "stage2_steps": 2,
        "gan_start": 0,
        "r1_every": 1,
        "perceptual_size": 64,
        "num_workers": 0,
        "log_every": 1,
        "eval_every": 1000,
        "eval_images": 2,
        "disc_width": 0.25,
    }
    trainer = Trainer(TrainConfig.from_dict(cfg))
    trainer.run()
    assert trainer.stage == 2 and trainer.step == 4
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    exported = resolve_weights(str(tmp_path / "run" / "export" / "tiny-run.json"))
    assert exported.info["extra"]["steps"] == 4 and exported.info["extra"]["images_seen"] == 8

    # Resuming with a longer schedule continues from the checkpoint instead of starting over.
    cfg["stage2_steps"] = 3
    resumed = Trainer(TrainConfig.from_dict(cfg))
    resumed.run()
    assert resumed.step == 5 and resumed.images_seen == 10
    shutil.rmtree(tmp_path / "run")


@pytest.mark.slow
@needs_shared
def test_the_same_trainer_runs_under_torchrun_with_two_processes(
    shared_data, vgg_weights, tmp_path
):
    """DistributedDataParallel on CPU (gloo): the multi-GPU code path, minus the GPUs."""
    import os
    import subprocess
    import sys

    config = tmp_path / "ddp.toml"
    config.write_text(
        f'model = "tiny"\ndata_root = "{shared_data}"\nout_dir = "{tmp_path / "run"}"\nbatch_size = 2\n'
        "stage1_steps = 1\nstage2_steps = 2\ngan_start = 0\nr1_every = 1\nperceptual_size = 64\n"
        "num_workers = 0\nlog_every = 1\neval_every = 1000\neval_images = 2\ndisc_width = 0.25\n"
    )
    env = {**os.environ, "ENTED_VGG_WEIGHTS": str(vgg_weights), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "-m",
            "ented_cli",
            "train",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = [line for line in proc.stderr.splitlines() if line.startswith('{"step"')]
    assert len(steps) == 3  # only rank 0 logs
    assert '"img_per_s"' in steps[-1] and '"gan"' in steps[-1]
    assert (tmp_path / "run" / "export" / "tiny-run.json").is_file()


def test_a_run_never_exports_under_a_bundled_weight_sets_name():
    # The preview recipe's run would otherwise write export/ented-256-preview.json, shadowing
    # the shipped weights for anyone who points ENTED_WEIGHTS_DIR at it.
    def name(out_dir: str) -> str:
        return TrainConfig(model="ented-256-preview", out_dir=out_dir).export_name()

    assert name("runs/ented-256-preview") == "ented-256-preview-trained"
    assert name("runs/preview-ref-cpu") == "ented-256-preview-preview-ref-cpu"
    assert name("runs/ented-256-preview-anneal") == "ented-256-preview-anneal"
    assert TrainConfig(model="ented-256", out_dir="runs/ented-256").export_name() == "ented-256"


def test_release_config_points_at_a_data_folder_a_user_makes(tmp_path):
    from ented_cli.errors import InputError
    from ented_cli.train.data import load_training_records

    cfg = TrainConfig.load(Path(__file__).parents[1] / "configs" / "ented-256.toml")
    assert cfg.data_root == "data/mine"  # what `ented prepare-data photos/ data/mine/` writes
    with pytest.raises(InputError, match="ented prepare-data"):
        load_training_records(tmp_path / cfg.data_root)
