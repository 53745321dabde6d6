"""torch's CPU threads: the default from free cores and load, --threads / ENTED_THREADS reaching
torch, and `ented bench` reporting the count (model/threads.py)."""

import json
import os
import threading

import pytest
import torch
from click.testing import CliRunner

from ented_cli.cli.main import main
from ented_cli.errors import EntedError, UsageError
from ented_cli.model import threads as th
from tests.conftest import EXAMPLES


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    """Every test starts with torch at 2 threads (so a count of 1 is visible) and no thread
    variables, and leaves torch as it found it."""
    before = torch.get_num_threads()
    for name in (th.ENV, "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from ented_cli.model.config import preset
    from ented_cli.model.generator import EntedGenerator
    from ented_cli.model.weight_lookup import resolve_weights
    from ented_cli.model.weights import save_weight_set

    torch.manual_seed(0)
    config = preset("tiny")
    folder = tmp_path_factory.mktemp("tiny-weights")
    manifest = save_weight_set(
        EntedGenerator(config).state_dict(), folder, "tiny-threads", config.to_dict(), card=None
    )
    return resolve_weights(str(manifest))


# ------------------------------------------------------------------------------- default count
@pytest.mark.parametrize(
    ("cores", "load", "expected"),
    [
        (2, 0.0, 2),
        (2, 0.4, 2),
        (2, 1.0, 1),
        (2, 6.5, 1),  # a trainer and tests on 2 cores: never below one
        (16, 3.2, 13),
        (16, 0.0, 16),
        (8, -1.0, 8),  # never above the cores
        (1, 100.0, 1),
    ],
)
def test_the_default_is_the_cores_other_processes_leave_free(cores, load, expected):
    assert th.default_threads(cores, load) == expected


def test_the_default_here_is_between_one_and_the_usable_cores():
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert 1 <= th.default_threads() <= usable
    assert th.usable_cores() == usable


def test_the_default_without_a_load_average_is_every_usable_core(monkeypatch):
    monkeypatch.setattr(th, "load_average", lambda: None)
    assert th.default_threads(4) == 4


def test_an_explicit_count_beats_ented_threads_which_beats_omp_num_threads():
    env = {th.ENV: "3", "OMP_NUM_THREADS": "5"}
    assert th.choose_threads(2, env) == th.ThreadChoice(2, "requested")
    assert th.choose_threads("auto", env) == th.ThreadChoice(3, th.ENV)
    assert th.choose_threads(None, {"OMP_NUM_THREADS": "5"}) == th.ThreadChoice(
        5, "OMP_NUM_THREADS"
    )
    auto = th.choose_threads(None, {"OMP_NUM_THREADS": "4,2"})  # OpenMP's nested syntax
    assert auto.source.startswith("auto (") and 1 <= auto.count <= th.usable_cores()


@pytest.mark.parametrize("bad", [0, -1, "0", "-2", "two", "1.5"])
def test_a_count_below_one_or_not_a_number_is_a_usage_error(bad):
    with pytest.raises(UsageError):
        th.parse_threads(bad)
    with pytest.raises(UsageError, match=th.ENV):
        th.choose_threads(None, {th.ENV: str(bad)})


# -------------------------------------------------------------------------------- reaching torch
def _threads_inside_restore(restorer, in_thread: bool = False) -> int:
    """torch.get_num_threads() as seen by the network while a face is being restored."""
    import numpy as np

    seen = []
    run_batch = restorer._restore_batch

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return run_batch(*args, **kwargs)

    restorer._restore_batch = spy
    face = np.zeros((1, 256, 256, 3), np.float32)
    if in_thread:  # the CLI's batch runner may call restore() from another thread
        worker = threading.Thread(target=restorer.restore, args=(face, [[]], 0.5))
        worker.start()
        worker.join()
    else:
        restorer.restore(face, [[]], 0.5)
    return seen[0]


def test_a_restorer_built_with_one_thread_restores_with_one(tiny_weights):
    from ented_cli.model.restorer import EntedRestorer

    restorer = EntedRestorer(tiny_weights, "cpu", threads=1)
    assert (restorer.threads, restorer.threads_source) == (1, "requested")
    assert _threads_inside_restore(restorer) == 1
    torch.set_num_threads(2)  # someone changed it since: the restorer's count still holds
    assert _threads_inside_restore(restorer, in_thread=True) == 1


def test_ented_threads_reaches_torch_through_the_pipeline_constructor(tiny_weights, monkeypatch):
    from ented_cli.pipeline.restore import RestorePipeline

    monkeypatch.setenv(th.ENV, "1")
    pipeline = RestorePipeline.from_weights(tiny_weights, device="cpu")
    assert (pipeline.restorer.threads, pipeline.restorer.threads_source) == (1, th.ENV)
    assert _threads_inside_restore(pipeline.restorer) == 1


def test_a_restorer_with_a_bad_count_is_a_usage_error(tiny_weights):
    from ented_cli.model.restorer import EntedRestorer

    with pytest.raises(UsageError):
        EntedRestorer(tiny_weights, "cpu", threads=0)


# ------------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("command", ["restore", "bench", "eval"])
@pytest.mark.parametrize("bad", ["0", "-1", "many"])
def test_threads_below_one_are_usage_errors(command, bad):
    result = CliRunner().invoke(main, [command, "--threads", bad])
    assert result.exit_code == 2, result.output
    assert "--threads" in result.output
    result = CliRunner().invoke(main, [command], env={th.ENV: bad})
    assert result.exit_code == 2, result.output


@pytest.mark.parametrize(("args", "env"), [(["--threads", "1"], {}), ([], {th.ENV: "1"})])
def test_restore_hands_threads_to_the_pipeline(args, env, monkeypatch, tmp_path):
    from ented_cli.pipeline.restore import RestorePipeline

    seen = {}

    def from_weights(*a, **kwargs):
        seen.update(kwargs)
        raise EntedError("stop here: no model needed")

    monkeypatch.setattr(RestorePipeline, "from_weights", from_weights)
    image = str(EXAMPLES / "astronaut.png")
    result = CliRunner().invoke(main, ["restore", image, "-o", str(tmp_path), *args], env=env)
    assert result.exit_code == 1 and "stop here" in result.output
    assert seen.get("threads") == 1


def test_bench_json_carries_the_thread_count(tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--config", "tiny", "--part", "generator", "--device", "cpu"]
    args += ["--batch-sizes", "1", "--repeats", "1", "--warmup", "0", "--max-seconds", "0"]
    result = CliRunner().invoke(main, [*args, "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    (cpu,) = report["devices"]
    assert (cpu["threads"], cpu["threads_source"]) == (1, "requested")
    assert report["settings"]["threads"] == 1
    assert "omp_wait_policy" in report["machine"]
    assert "1 torch thread (requested)" in result.output
