"""The projected discriminator (train/projected_gan.py): heads on frozen AlexNet-LPIPS features."""

import json

import cv2
import pytest
import torch

from ented_cli.train.projected_gan import (
    ProjectedDiscriminator,
    discriminator_loss,
    generator_loss,
)
from tests.conftest import EXAMPLES, needs_shared


def _photo() -> torch.Tensor:
    bgr = cv2.resize(cv2.imread(str(EXAMPLES / "astronaut.png")), (256, 256))
    return torch.from_numpy(bgr[:, :, ::-1].copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_heads_learn_sharp_from_blurred_in_a_few_steps_and_push_the_generator(alex_weights):
    # What the heads are for: real texture vs a smooth guess, learnt in tens of steps on CPU,
    # and a generator gradient that points from the blurred image towards detail.
    from ented_cli.train.lpips_alex import LPIPSAlex

    torch.manual_seed(0)
    alex = LPIPSAlex(alex_weights)
    sharp = _photo().repeat(2, 1, 1, 1)
    sharp[1] = sharp[1].flip(-1)
    blurred = torch.nn.functional.avg_pool2d(sharp, 9, 1, 4).requires_grad_(True)
    _, fake, real = alex.with_features(blurred, sharp)
    disc = ProjectedDiscriminator()
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3)
    first = float(discriminator_loss(disc, fake, real).detach())
    for _ in range(30):
        loss = discriminator_loss(disc, fake, real)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first, (first, float(loss.detach()))
    assert float(disc([f.detach() for f in real]).mean()) > float(disc(fake).mean())

    opt.zero_grad(set_to_none=True)
    generator_loss(disc, fake).backward()
    assert all(p.grad is None for p in disc.parameters())  # the generator's loss trains G only
    assert blurred.grad is not None and blurred.grad.abs().sum() > 0


@pytest.mark.slow
@needs_shared
def test_trainer_with_projected_heads_logs_them_and_resumes_them(
    shared_data, vgg_weights, alex_weights, tmp_path
):
    from ented_cli.train.config import TrainConfig
    from ented_cli.train.trainer import Trainer

    cfg = {
        "model": "tiny",
        "data_root": str(shared_data),
        "out_dir": str(tmp_path / "run"),
        "batch_size": 2,
        "stage1_steps": 0,
        "stage2_steps": 3,
        "num_workers": 0,
        "log_every": 1,
        "eval_every": 1000,
        "eval_images": 2,
        "gan_proj_start": 1,
        "losses": {"perceptual": 0.0, "lpips_alex": 1.0, "gan": 0.0, "gan_proj": 0.1},
    }
    trainer = Trainer(TrainConfig.from_dict(cfg))
    trainer.run()
    log = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    steps = [json.loads(line) for line in log if '"d_proj"' in line]
    assert len(steps) == 3 and "gan_proj" not in steps[0] and "gan_proj" in steps[-1]
    assert trainer.proj_steps == 3
    heads = {k: v.clone() for k, v in trainer.D_proj.state_dict().items()}

    cfg["stage2_steps"] = 4
    resumed = Trainer(TrainConfig.from_dict(cfg))
    resumed.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert resumed.proj_steps == 3
    assert all(torch.equal(v, resumed.D_proj.state_dict()[k]) for k, v in heads.items())


def test_projected_heads_without_their_features_is_a_config_error(tmp_path):
    from ented_cli.errors import UsageError
    from ented_cli.train.config import TrainConfig
    from ented_cli.train.trainer import Trainer

    cfg = TrainConfig.from_dict(
        {"model": "tiny", "out_dir": str(tmp_path), "losses": {"gan_proj": 0.1}}
    )
    with pytest.raises(UsageError, match="lpips_alex"):
        Trainer(cfg)
