"""fp16/bf16 inference measured at export, recorded in the manifest, and honoured by --dtype auto."""

import hashlib

import torch

from ented_cli.model.config import preset
from ented_cli.model.generator import EntedGenerator
from ented_cli.model.restorer import pick_dtype
from ented_cli.model.weight_lookup import bundled_weights_dir, resolve_weights
from ented_cli.model.weights import DEFAULT_NAME, save_weight_set, verify_weight_set
from ented_cli.train.export import (
    export_checkpoint,
    measure_inference_dtypes,
    record_inference_dtypes,
)

GPU = torch.device("cuda")  # only a label here: nothing runs on it


def tiny_generator() -> EntedGenerator:
    torch.manual_seed(0)
    return EntedGenerator(preset("tiny")).eval()


def test_export_records_how_fp16_and_bf16_inference_measured(tmp_path):
    g = tiny_generator()
    checkpoint = tmp_path / "checkpoint.pt"
    state = {"G_ema": g.state_dict(), "model_config": g.config.to_dict(), "history": []}
    state |= {"stage": 2, "step": 3, "stage1_steps_done": 0, "images_seen": 6, "elapsed": 60.0}
    torch.save({**state, "config": {}}, checkpoint)

    measured = resolve_weights(export_checkpoint(checkpoint, tmp_path / "out", "tiny")).info[
        "inference_dtypes"
    ]
    assert set(measured) == {"float16", "bfloat16"}
    for result in measured.values():
        assert result["safe"] is True
        assert 0 <= result["mean_abs_err"] <= result["max_abs_err"]


def test_a_network_that_overflows_fp16_is_measured_unsafe_in_fp16_only():
    g = tiny_generator()
    with torch.no_grad():  # a style so strong that demodulation's sum of squares passes 65504
        g.convs[0].conv.affine.bias.fill_(1000.0)
    measured = measure_inference_dtypes(g)
    assert measured["float16"]["safe"] is False and measured["float16"]["mean_abs_err"] > 1 / 255
    assert measured["bfloat16"]["safe"] is True  # bf16 has fp32's range


def test_recording_an_exported_set_changes_only_its_manifest(tmp_path):
    g = tiny_generator()
    manifest = save_weight_set(g.state_dict(), tmp_path, "tiny", g.config.to_dict())
    ws = resolve_weights(manifest)
    assert ws.info["inference_dtypes"] is None
    sums = [hashlib.sha256(p.read_bytes()).hexdigest() for p in ws.shards]

    measured = record_inference_dtypes(manifest)
    again = resolve_weights(manifest)
    assert again.info["inference_dtypes"] == measured
    assert [hashlib.sha256(p.read_bytes()).hexdigest() for p in again.shards] == sums
    assert verify_weight_set(again) == []


def test_auto_dtype_follows_the_measurement_on_a_gpu(monkeypatch):
    safe, unsafe = {"safe": True}, {"safe": False, "max_abs_err": 0.2}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    # Nothing measured (weights exported before): fp16 on a GPU, as always.
    assert pick_dtype("auto", GPU) == torch.float16
    assert pick_dtype("auto", GPU, {"float16": safe, "bfloat16": safe}) == torch.float16
    assert pick_dtype("auto", GPU, {"float16": unsafe, "bfloat16": safe}) == torch.bfloat16
    assert pick_dtype("auto", GPU, {"float16": unsafe, "bfloat16": unsafe}) == torch.float32
    assert pick_dtype("auto", GPU, {"float16": unsafe}) == torch.float32
    # A GPU without bf16 falls back to fp32; the CPU computes in fp32 whatever was measured.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype("auto", GPU, {"float16": unsafe, "bfloat16": safe}) == torch.float32
    assert pick_dtype("auto", torch.device("cpu"), {"float16": safe}) == torch.float32
    # An explicit --dtype is the user's choice, measured or not.
    assert pick_dtype("float16", GPU, {"float16": unsafe}) == torch.float16


def test_the_shipped_preview_weights_carry_their_measurement():
    shipped = resolve_weights(bundled_weights_dir() / f"{DEFAULT_NAME}.json")
    measured = shipped.info["inference_dtypes"]
    assert measured["float16"]["safe"] is True and measured["bfloat16"]["safe"] is True
