"""Export the EMA generator of a training run as a shipped weight set (fp16 safetensors shards)."""

from __future__ import annotations

from pathlib import Path

import torch

from ented_cli.model.weights import save_weight_set


def training_summary(state: dict) -> dict:
    evals = [h for h in state["history"] if "eval" in h]
    prior = state.get("prior") or {}
    return {
        "stage": state["stage"],
        "steps": state["step"],
        "stage1_steps": state["stage1_steps_done"],
        "images_seen": state["images_seen"],
        "train_minutes": round(state["elapsed"] / 60, 1),
        "last_eval": evals[-1]["eval"] if evals else None,
        "train_config": state["config"],
        "cumulative_minutes": round(prior.get("minutes", 0.0) + state["elapsed"] / 60, 1),
        "cumulative_images": prior.get("images", 0) + state["images_seen"],
        "resumed_from": state["config"].get("resume_from") or None,
    }


def export_generator(trainer, out_dir: Path, name: str) -> Path:
    """Writes `<name>.json` + shards from a live Trainer."""
    state = {
        k: v for k, v in trainer.state().items() if k not in ("G", "D", "opt_g", "opt_d", "teacher")
    }
    return save_weight_set(
        trainer.G_ema.state_dict(),
        out_dir,
        name,
        trainer.model_config.to_dict(),
        extra=training_summary(state),
    )


def export_checkpoint(checkpoint: Path, out_dir: Path, name: str) -> Path:
    """Writes a weight set from a checkpoint file (e.g. one fetched back from a GPU machine)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return save_weight_set(
        state["G_ema"], out_dir, name, state["model_config"], extra=training_summary(state)
    )
