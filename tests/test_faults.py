"""Faults a user can run into: damaged weights, running out of memory, two runs writing one folder.

Everything here is real: the shipped weights (copied and then damaged), the real `ented` command
in subprocesses, the real generator. Out-of-memory is the one thing this machine cannot produce on
a GPU, so it is injected inside the real model call (a forward pre-hook on a decoder layer, deep in
the forward pass, after the earlier layers have run) and, for the CPU, provoked for real by asking
torch's allocator for a petabyte.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ented_cli.cli.main import main
from ented_cli.errors import EntedError, WeightsError
from ented_cli.model.restorer import EntedRestorer, is_out_of_memory
from ented_cli.model.weight_lookup import resolve_weights
from ented_cli.model.weights import load_state_dict, save_weight_set
from tests.conftest import EXAMPLES

DEGRADED = EXAMPLES / "astronaut_degraded.jpg"
HOPPER = EXAMPLES / "grace_hopper.jpg"
# The installed command, run by this interpreter (the venv need not be on PATH).
ENTED = [sys.executable, "-m", "ented_cli"]
# A longer soak of the concurrent-writer tests: ENTED_STRESS=10 python -m pytest tests/test_faults.py
STRESS = int(os.environ.get("ENTED_STRESS", "1"))


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("ENTED_WEIGHTS", "ENTED_WEIGHTS_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def shipped():
    return resolve_weights(None)


def copy_weights(ws, folder: Path) -> tuple[Path, Path]:
    """A private copy of the shipped weight set: (manifest, shard)."""
    shutil.copytree(ws.manifest.parent, folder)
    return folder / ws.manifest.name, folder / ws.shards[0].name


def truncate(manifest: Path, shard: Path) -> None:
    shard.write_bytes(shard.read_bytes()[:-4096])


def flip_bytes(manifest: Path, shard: Path) -> None:
    data = bytearray(shard.read_bytes())
    for offset in (len(data) // 3, len(data) - 10):  # inside tensor data: the header stays valid
        data[offset] ^= 0xFF
    shard.write_bytes(bytes(data))


def wrong_manifest_sum(manifest: Path, shard: Path) -> None:
    info = json.loads(manifest.read_text())
    info["shards"][0]["sha256"] = hashlib.sha256(b"another export").hexdigest()
    manifest.write_text(json.dumps(info))


DAMAGE = {
    "truncated": (truncate, "truncated"),
    "flipped-bytes": (flip_bytes, "corrupt (sha256"),
    "manifest-sha256": (wrong_manifest_sum, "corrupt (sha256"),
}


def refit(ws, folder: Path, change) -> Path:
    """The shipped tensors saved again as a valid (correctly hashed) set after `change(state)`."""
    state = load_state_dict(ws)
    change(state)
    return save_weight_set(state, folder, ws.name, ws.config)


def drop_tensor(state):
    del state["convs.0.bias"]


def grow_tensor(state):
    state["post_quant.weight"] = torch.zeros(129, 128, 1, 1, dtype=torch.float16)


MISFITS = {
    "missing-tensor": (drop_tensor, "1 tensor(s) missing (e.g. 'convs.0.bias')"),
    "wrong-shape": (grow_tensor, "'post_quant.weight' is (129, 128, 1, 1), the model needs"),
}


def run_ented(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ENTED, *map(str, args)], capture_output=True, text=True, timeout=timeout, check=False
    )


# ------------------------------------------------------------------------------ damaged weights


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_weights_stop_ented_restore_before_anything_is_written(tmp_path, shipped, damage):
    manifest, shard = copy_weights(shipped, tmp_path / "w")
    hurt, expected = DAMAGE[damage]
    hurt(manifest, shard)
    out = tmp_path / "out" / "fixed.jpg"

    t = time.perf_counter()
    result = run_ented("restore", DEGRADED, "--weights", manifest, "-o", out)
    elapsed = time.perf_counter() - t
    print(f"{damage}: `ented restore` failed in {elapsed * 1000:.0f} ms (process start included)")

    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert lines[0].startswith("ented: error: ") and expected in lines[0]
    assert str(shard) in lines[0] and "re-copy or re-download" in lines[0]  # the file and the fix
    assert not (tmp_path / "out").exists()  # not even the output folder
    assert result.stdout == ""


@pytest.mark.parametrize("misfit", MISFITS)
def test_weights_that_do_not_fit_the_model_are_one_clear_line(tmp_path, shipped, misfit):
    change, expected = MISFITS[misfit]
    manifest = refit(shipped, tmp_path / "w", change)
    result = run_ented("restore", DEGRADED, "--weights", manifest, "-o", tmp_path / "o.jpg")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert str(manifest) in lines[0] and "ented export" in lines[0]
    assert not (tmp_path / "o.jpg").exists()


@pytest.mark.parametrize("damage", DAMAGE)
def test_damaged_weights_are_refused_before_a_model_is_built(
    tmp_path, shipped, damage, monkeypatch
):
    """Verification comes first: a damaged set never reaches the generator, not even partly."""
    import ented_cli.model.generator as generator

    built = []

    class Watched(generator.EntedGenerator):
        def __init__(self, config):
            built.append(config)
            super().__init__(config)

    monkeypatch.setattr(generator, "EntedGenerator", Watched)
    manifest, shard = copy_weights(shipped, tmp_path / "w")
    DAMAGE[damage][0](manifest, shard)
    with pytest.raises(WeightsError, match=r"re-copy or re-download") as err:
        EntedRestorer(resolve_weights(manifest), "cpu")
    assert str(shard) in str(err.value) and "\n" not in str(err.value)
    assert built == []
    # The undamaged set goes through the same path and does build the model.
    EntedRestorer(shipped, "cpu")
    assert len(built) == 1


def test_the_python_api_raises_the_same_weights_error(tmp_path, shipped):
    from ented_cli.api import Ented

    manifest, shard = copy_weights(shipped, tmp_path / "w")
    flip_bytes(manifest, shard)
    with pytest.raises(WeightsError, match="sha256") as err:
        Ented(str(manifest), device="cpu")
    assert isinstance(err.value, EntedError) and err.value.exit_code == 1
    wrong = refit(shipped, tmp_path / "misfit", grow_tensor)
    with pytest.raises(WeightsError, match="wrong shape"):
        Ented(str(wrong), device="cpu")


def test_checking_the_weights_on_every_load_costs_a_few_milliseconds(shipped):
    """Verification runs on every load; hashing the 4.6 MiB shard must stay cheap."""

    def best_ms(verify: bool) -> float:
        times = []
        for _ in range(7):
            t = time.perf_counter()
            load_state_dict(shipped, verify=verify)
            times.append(time.perf_counter() - t)
        return min(times) * 1000

    checked, unchecked = best_ms(True), best_ms(False)
    print(f"load_state_dict: {checked:.1f} ms verified, {unchecked:.1f} ms unverified")
    assert checked - unchecked < 50  # measured ~2.5 ms on 2 busy cores


# ---------------------------------------------------------------------------- out of memory


class DeviceLimit:
    """Makes the real model run out of memory on batches larger than `max_faces`.

    A pre-hook on the last decoder layer: the forward pass has already done most of its work
    (and allocated most of its memory) when the error comes, as on a real GPU.
    """

    def __init__(self, restorer: EntedRestorer, max_faces: int, error=None):
        self.max_faces, self.error = max_faces, error
        self.batches: list[int] = []  # every batch size the decoder saw, in order
        self.failures = 0
        restorer.model.convs[-1].register_forward_pre_hook(self)

    def __call__(self, module, args):
        n = args[0].shape[0]
        self.batches.append(n)
        if n > self.max_faces:
            self.failures += 1
            raise self.error() if self.error else torch.OutOfMemoryError("CUDA out of memory.")


def petabyte_allocation() -> BaseException:
    """The error the CPU allocator really raises when memory runs out."""
    try:
        torch.empty(2**50, dtype=torch.uint8)
    except RuntimeError as exc:
        return exc
    pytest.skip("this machine handed out a petabyte")


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Seven real aligned faces (two photos, flipped and shifted copies), float BGR in [0, 1]."""
    from ented_cli.faces.align import estimate_alignment, warp_face
    from ented_cli.faces.detect import FaceDetector

    detector = FaceDetector()
    crops = []
    for path in (DEGRADED, HOPPER):
        image = cv2.imread(str(path))
        (face,) = detector.detect(image)
        crop = warp_face(image, estimate_alignment(face.landmarks, 256), 256)
        crops += [crop, crop[:, ::-1], np.roll(crop, 9, axis=0)]
    crops.append(crops[0] // 2)
    return np.stack(crops).astype(np.float32) / 255.0  # BGR, as the pipeline hands them over


@pytest.mark.slow
def test_out_of_memory_retries_smaller_batches_with_the_same_outputs(shipped, faces, capsys):
    refs = [[]] * len(faces)
    one_at_a_time = EntedRestorer(shipped, "cpu", batch_size=1).restore(faces, refs, 0.5)
    pairs = EntedRestorer(shipped, "cpu", batch_size=2).restore(faces, refs, 0.5)

    restorer = EntedRestorer(shipped, "cpu", batch_size=8)
    limit = DeviceLimit(restorer, max_faces=2)
    retried = restorer.restore(faces, refs, 0.5)

    # 8 and 4 failed once each, then 2 + 2 + 2 + 1 went through.
    assert limit.batches == [7, 4, 2, 2, 2, 1] and limit.failures == 2
    assert restorer.batch_size == 2
    # Bit-identical to a run that used batches of 2 from the start ...
    assert np.array_equal(retried, pairs)
    # ... and equal to one face at a time up to float rounding (CPU kernels block by batch size),
    # far below one 8-bit step (0.0039).
    assert np.abs(retried - one_at_a_time).max() < 1e-5
    err = capsys.readouterr().err
    assert err.count("retrying with --batch-size") == 2 and "--batch-size 2" in err


@pytest.mark.slow
def test_the_reduced_batch_size_sticks_for_the_rest_of_the_run(shipped, faces):
    restorer = EntedRestorer(shipped, "cpu", batch_size=16)
    limit = DeviceLimit(restorer, max_faces=3)
    for _ in range(3):  # three later windows of the same batch
        restorer.restore(faces, [[]] * len(faces), 0.5)
    # The first window fails at 7 faces (all there are, though --batch-size is 16), then at 4;
    # from then on every batch is at most 2: no growing back, no failing again.
    assert limit.failures == 2 and limit.batches[:3] == [7, 4, 2]
    assert max(limit.batches[2:]) == 2 and limit.batches[2:].count(2) == 9
    assert restorer.batch_size == 2


def test_running_out_of_memory_for_a_single_face_is_a_clear_error(shipped, faces):
    restorer = EntedRestorer(shipped, "cpu", batch_size=4)
    DeviceLimit(restorer, max_faces=0)
    with pytest.raises(EntedError, match=r"^out of memory \(cpu\) even for one face; ") as err:
        restorer.restore(faces[:3], [[]] * 3, 0.5)
    assert "\n" not in str(err.value)
    assert restorer.batch_size == 1  # what it learned is kept


def test_the_gpu_message_says_to_use_the_cpu(shipped):
    restorer = EntedRestorer(shipped, "cpu")
    restorer.device = torch.device("cuda", 0)  # only the message is asked for
    message = restorer._out_of_memory_message("one face")
    assert message.startswith("out of CUDA memory (cuda:0) even for one face")
    assert "--device cpu" in message


def test_the_cpu_allocators_own_error_is_handled_like_gpu_out_of_memory(shipped, faces):
    error = petabyte_allocation()
    assert is_out_of_memory(error) and "can't allocate memory" in str(error)
    restorer = EntedRestorer(shipped, "cpu", batch_size=4)

    def allocate_a_petabyte():
        torch.empty(2**50, dtype=torch.uint8)  # a real failed allocation inside the forward

    limit = DeviceLimit(restorer, max_faces=1, error=allocate_a_petabyte)
    out = restorer.restore(faces[:3], [[]] * 3, 0.5)
    assert out.shape == (3, 256, 256, 3) and limit.batches == [3, 2, 1, 1, 1]
    assert is_out_of_memory(MemoryError()) and is_out_of_memory(torch.OutOfMemoryError("x"))


def test_other_errors_are_not_mistaken_for_out_of_memory(shipped, faces):
    restorer = EntedRestorer(shipped, "cpu", batch_size=4)

    def bug():
        return RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)")

    limit = DeviceLimit(restorer, max_faces=1, error=bug)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        restorer.restore(faces[:3], [[]] * 3, 0.5)
    assert limit.batches == [3] and restorer.batch_size == 4  # no retry, nothing learned


def test_out_of_memory_while_encoding_a_reference_is_a_clear_error(shipped, faces):
    restorer = EntedRestorer(shipped, "cpu")

    def refuse(module, args):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    restorer.model.ref_encoder.register_forward_pre_hook(refuse)
    with pytest.raises(EntedError, match=r"even for a reference face"):
        restorer.add_reference("mum", faces[0])


@pytest.mark.slow
def test_ented_restore_recovers_from_out_of_memory_with_identical_files(tmp_path, monkeypatch):
    """Through the real command: three photos in one window of --batch-size 4, a device that
    fits one face; the files equal those of a plain --batch-size 1 run, byte for byte."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, src in enumerate((DEGRADED, HOPPER, DEGRADED)):
        shutil.copy(src, inputs / f"{i}{src.suffix}")

    def ented(*args):
        return CliRunner().invoke(main, ["restore", str(inputs), "-q", "--ext", "png", *args])

    plain = ented("-o", str(tmp_path / "plain"), "--batch-size", "1")
    assert plain.exit_code == 0, plain.stderr

    limits = []
    real_init = EntedRestorer.__init__

    def small_device(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        limits.append(DeviceLimit(self, max_faces=1))

    monkeypatch.setattr(EntedRestorer, "__init__", small_device)
    retried = ented("-o", str(tmp_path / "retried"), "--batch-size", "4")
    assert retried.exit_code == 0, retried.stderr
    assert limits[0].failures == 2 and limits[0].batches[:2] == [3, 2]
    assert "retrying" not in retried.stderr  # -q silences every warning, out of memory's too
    names = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert names == ["0.png", "1.png", "2.png"]
    for name in names:
        assert (tmp_path / "plain" / name).read_bytes() == (
            tmp_path / "retried" / name
        ).read_bytes()

    # A device that cannot hold even one face: each photo fails on one line, nothing is written.
    def no_room(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        DeviceLimit(self, max_faces=0)

    monkeypatch.setattr(EntedRestorer, "__init__", no_room)
    failed = ented("-o", str(tmp_path / "none"))
    assert failed.exit_code == 1
    assert failed.stderr.count("out of memory (cpu) even for one face") == 3
    assert not (tmp_path / "none").exists()


# ------------------------------------------------------------------------- concurrent writers

WRITER = """
import sys, time
from pathlib import Path
from ented_cli.imaging.atomic import write_atomic
target, payload, start, n = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes(), Path(sys.argv[3]), int(sys.argv[4])
while not start.exists():
    time.sleep(0.001)
for _ in range(n):
    write_atomic(target, payload)
"""


def png_payloads(count: int) -> list[bytes]:
    """Different, decodable PNG files of different sizes (about 0.2 to 0.9 MB)."""
    rng = np.random.default_rng(7)
    out = []
    for k in range(count):
        side = 260 + 110 * k
        ok, data = cv2.imencode(".png", rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        assert ok
        out.append(data.tobytes())
    return out


class Watcher(threading.Thread):
    """Reads the watched files as fast as it can while writers run; keeps every distinct read."""

    def __init__(self, paths: list[Path]):
        super().__init__(daemon=True)
        self.paths, self.seen, self.reads = paths, {}, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for path in self.paths:
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                self.reads += 1
                self.seen.setdefault(hashlib.sha256(data).hexdigest(), data)
            time.sleep(0.0005)  # leave the cores to the writers


def test_many_processes_writing_one_file_never_tear_it(tmp_path):
    writers, iterations = 4, 150 * STRESS
    payloads = png_payloads(writers)
    for k, data in enumerate(payloads):
        (tmp_path / f"payload{k}.png").write_bytes(data)
    target_dir = tmp_path / "out"
    target_dir.mkdir()
    target, start = target_dir / "face.png", tmp_path / "go"

    watcher = Watcher([target])
    watcher.start()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                target,
                tmp_path / f"payload{k}.png",
                start,
                str(iterations),
            ]
        )
        for k in range(writers)
    ]
    t = time.perf_counter()
    start.touch()
    assert all(p.wait(timeout=300) == 0 for p in procs)
    elapsed = time.perf_counter() - t
    watcher.stop.set()
    watcher.join()

    valid = {hashlib.sha256(p).hexdigest() for p in payloads}
    print(
        f"write_atomic: {writers} processes x {iterations} writes of one file in {elapsed:.1f} s; "
        f"{watcher.reads} concurrent reads, {len(watcher.seen)} distinct contents, "
        f"{len(set(watcher.seen) - valid)} torn"
    )
    assert set(watcher.seen) <= valid  # every read was one writer's whole file
    assert len(watcher.seen) >= 2  # the readers really did see the writers take turns
    assert target.read_bytes() in payloads
    assert cv2.imdecode(np.frombuffer(target.read_bytes(), np.uint8), cv2.IMREAD_COLOR) is not None
    assert [p.name for p in target_dir.iterdir()] == ["face.png"]  # no temporary files left


@pytest.mark.slow
def test_two_ented_restores_into_one_folder_never_leave_a_torn_file(tmp_path):
    """Two real `ented restore` runs write the same six names into one folder at the same time.

    They differ in --fidelity, so their files differ: every file must be, byte for byte, the one
    run A or run B writes alone.
    """
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i, photo in enumerate(map(cv2.imread, map(str, (DEGRADED, HOPPER)))):
        cv2.imwrite(str(inputs / f"p{i}.png"), photo)
        cv2.imwrite(str(inputs / f"p{i}_flipped.png"), photo[:, ::-1])
        cv2.imwrite(str(inputs / f"p{i}_cropped.png"), photo[20:-10, 15:-25])

    def command(fidelity: str, out: Path) -> list[str]:
        return [
            *ENTED,
            "restore",
            str(inputs),
            "-o",
            str(out),
            "-w",
            fidelity,
            "-q",
            "--ext",
            "png",
            "--no-guard",  # every file must differ between the two fidelities
        ]

    alone = {}
    for fidelity in ("0.1", "0.9"):
        out = tmp_path / f"alone{fidelity}"
        subprocess.run(command(fidelity, out), check=True, timeout=300)
        alone[fidelity] = {p.name: p.read_bytes() for p in out.iterdir()}
    names = sorted(alone["0.1"])
    assert len(names) == 6 and all(alone["0.1"][n] != alone["0.9"][n] for n in names)

    shared = tmp_path / "shared"
    watcher = Watcher([shared / n for n in names])
    watcher.start()
    rounds = 2 * STRESS
    final_from = {"0.1": 0, "0.9": 0}
    t = time.perf_counter()
    for _ in range(rounds):
        procs = [subprocess.Popen(command(f, shared)) for f in ("0.1", "0.9")]
        assert [p.wait(timeout=300) for p in procs] == [0, 0]
        for name in names:
            data = (shared / name).read_bytes()
            winner = [f for f in alone if alone[f][name] == data]
            assert winner, f"{name} is neither run's file (torn or mixed)"
            final_from[winner[0]] += 1
        assert sorted(p.name for p in shared.iterdir()) == names  # no temporary files left
    watcher.stop.set()
    watcher.join()

    valid = {hashlib.sha256(files[n]).hexdigest() for files in alone.values() for n in names}
    print(
        f"ented restore: {rounds} rounds x 2 processes x {len(names)} files in "
        f"{time.perf_counter() - t:.1f} s; final files from each run {final_from}; "
        f"{watcher.reads} concurrent reads, {len(set(watcher.seen) - valid)} torn"
    )
    assert set(watcher.seen) <= valid
