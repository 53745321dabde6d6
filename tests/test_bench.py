"""`ented bench` and the worker pipeline: real detector, real identity model, real weights."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from ented_cli.bench.pipeline_bench import STAGES
from ented_cli.cli.main import main
from ented_cli.pipeline.workers import WorkerPool
from tests.conftest import EXAMPLES, ROOT

ASTRONAUT = EXAMPLES / "astronaut.png"
DEGRADED = EXAMPLES / "astronaut_degraded.jpg"
HOPPER = EXAMPLES / "grace_hopper.jpg"


def ented(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def positive(value) -> bool:
    return isinstance(value, int | float) and value > 0


# ----------------------------------------------------------------------------------- ented bench
@pytest.mark.slow
def test_bench_with_the_tiny_config_times_every_batch_size_and_names_the_slowest_stage(tmp_path):
    out = tmp_path / "bench.json"
    result = ented(
        "bench",
        "--config",
        "tiny",
        "--device",
        "cpu",
        "--batch-sizes",
        "4,1,2",
        "--repeats",
        1,
        "--warmup",
        0,
        "--count",
        3,
        "--json",
        out,
        "-q",
    )
    assert result.exit_code == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["model"] == {
        "name": "tiny-random",
        "random_init": True,
        "params_m": report["model"]["params_m"],
        "config": "tiny",
        "weights": None,
    }
    assert report["machine"]["cpu_cores"] >= 1 and report["machine"]["torch"]
    (cpu,) = report["devices"]
    assert cpu["device"] == "cpu" and cpu["dtype"] == "float32"

    rows = cpu["generator"]
    assert [(r["mode"], r["batch_size"]) for r in rows] == [
        (mode, b) for mode in ("reference", "blind") for b in (1, 2, 4)
    ]
    for r in rows:
        assert all(
            positive(r[k]) for k in ("faces_per_s", "ms_per_face", "latency_ms", "peak_rss_mib")
        )
        assert r["ms_per_face"] == pytest.approx(r["latency_ms"] / r["batch_size"], rel=0.01)
        assert positive(r["speedup_vs_batch1"]) and "error" not in r

    sequential, workers = cpu["pipeline"]
    assert (sequential["workers"], workers["workers"]) == (0, 2)
    for p in (sequential, workers):
        assert p["images"] == 3 and p["errors"] == 0 and p["faces"] == 3  # one face per example
        assert all(positive(p[k]) for k in ("images_per_s", "faces_per_s", "wall_s", "latency_ms"))
        assert list(p["stages"]) == list(STAGES)
        assert sum(s["share"] for s in p["stages"].values()) == pytest.approx(1, abs=0.01)
        assert all(p["stages"][s]["ms"] > 0 for s in ("decode", "detect", "identity", "restore"))
        assert p["slowest_stage"] in STAGES
        assert p["slowest_share"] == max(s["share"] for s in p["stages"].values())
    assert sequential["speedup_vs_sequential"] == 1.0 and positive(workers["speedup_vs_sequential"])

    table = result.stdout
    assert "random weights: timings only" in table
    assert f"slowest stage: {sequential['slowest_stage']} (" in table
    assert "sequential" in table and "2 workers" in table


@pytest.mark.slow
def test_bench_quick_on_the_bundled_weights(tmp_path):
    out = tmp_path / "bench.json"
    result = ented("bench", "--quick", "--device", "cpu", "--json", out, "-q")
    assert result.exit_code == 0, result.stderr
    report = json.loads(out.read_text())
    assert report["model"]["name"] == "ented-256-preview" and not report["model"]["random_init"]
    (cpu,) = report["devices"]
    assert sorted({r["batch_size"] for r in cpu["generator"]}) == [1, 4]
    assert [p["pipeline"] for p in cpu["pipeline"]] == ["sequential", "2 workers"]
    assert all(p["errors"] == 0 and p["faces"] == 3 for p in cpu["pipeline"])
    assert "ented-256-preview" in result.stdout and "slowest stage:" in result.stdout


def test_bench_usage_errors_are_one_line_with_exit_code_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, words in [
        (["--images", empty], "no images"),
        (["--images", tmp_path / "nope"], "not a folder"),
        (["--batch-sizes", "0,4"], "batch sizes of 1 or more"),
        (["--config", "huge"], "--config 'huge' is unknown"),
        (["--ref", tmp_path / "nobody.jpg"], "no such file"),
    ]:
        result = ented("bench", "--quick", *args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.stderr


# ------------------------------------------------------------------------------ worker pipeline
@pytest.fixture(scope="module")
def parts():
    from ented_cli.faces.detect import FaceDetector
    from ented_cli.faces.identity import IdentityEncoder
    from ented_cli.model.restorer import EntedRestorer
    from ented_cli.model.weight_lookup import resolve_weights

    return EntedRestorer(resolve_weights(None), "cpu"), FaceDetector(), IdentityEncoder()


def make_pipeline(parts, batch_size):
    from ented_cli.pipeline.references import ReferenceGallery
    from ented_cli.pipeline.restore import RestoreOptions, RestorePipeline

    restorer, detector, encoder = parts
    restorer.batch_size = batch_size
    pipeline = RestorePipeline(restorer, detector, encoder, RestoreOptions(guard=False))
    errors = []
    gallery = ReferenceGallery(pipeline.references.faces([("collins", ASTRONAUT)], errors))
    assert not errors
    return pipeline, gallery


def make_jobs(inputs, out_dir):
    from ented_cli.paths import InputItem
    from ented_cli.pipeline.batch import make_job

    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        make_job(InputItem(p, str(p), Path(p.name)), out_dir / f"{i:02d}{p.suffix}")
        for i, p in enumerate(inputs)
    ]


def temp_files(folder):
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.parametrize("batch_size", [1, 2])
def test_worker_pipeline_writes_the_same_bytes_in_order_and_survives_a_bad_input(
    parts, tmp_path, batch_size
):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(DEGRADED.read_bytes()[:300])  # a truncated JPEG in the middle
    inputs = [DEGRADED, HOPPER, broken, ASTRONAUT, DEGRADED]
    from ented_cli.pipeline.batch import BatchRunner

    pipeline, gallery = make_pipeline(parts, batch_size)
    assert BatchRunner(pipeline).workers == 0  # the default on a CPU restorer: sequential

    runs = {}
    for workers in (0, 2):
        runner = BatchRunner(pipeline, workers=workers)
        jobs = make_jobs(inputs, tmp_path / f"w{workers}")
        yielded = list(runner.run(jobs, lambda item: gallery))
        assert yielded == jobs  # every job, in input order
        runs[workers] = jobs
        assert not temp_files(tmp_path / f"w{workers}")
    for workers, jobs in runs.items():
        statuses = [j.report.status for j in jobs]
        assert statuses == ["restored", "restored", "error", "restored", "restored"], workers
        assert str(broken) in jobs[2].report.error and not jobs[2].output.exists()
        assert [f.mode for f in jobs[0].report.faces] == ["reference"]
        assert [f.mode for f in jobs[1].report.faces] == ["blind"]
    for seq, par in zip(runs[0], runs[2]):
        if seq.report.status != "error":
            assert seq.output.read_bytes() == par.output.read_bytes(), seq.output.name
    # the threads are gone and the pipeline talks to its own models again
    assert not [t for t in threading.enumerate() if t.name.startswith("ented-")]
    assert pipeline.restorer is parts[0] and pipeline.encoder is parts[2]


class InterruptingRestorer:
    """The real restorer, with Ctrl-C arriving during its third batch."""

    def __init__(self, restorer):
        self.restorer, self.calls = restorer, 0
        self.device = restorer.device

    def add_reference(self, key, face):
        self.restorer.add_reference(key, face)

    def restore(self, faces, refs, fidelity):
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return self.restorer.restore(faces, refs, fidelity)


def test_ctrl_c_stops_the_workers_and_leaves_only_complete_outputs(parts, tmp_path):
    from ented_cli.pipeline.batch import BatchRunner
    from ented_cli.pipeline.restore import RestoreOptions, RestorePipeline

    restorer = InterruptingRestorer(parts[0])
    parts[0].batch_size = 1
    pipeline = RestorePipeline(restorer, parts[1], parts[2], RestoreOptions(guard=False))
    runner = BatchRunner(pipeline, batch_size=1, workers=2)
    jobs = make_jobs([DEGRADED, HOPPER, ASTRONAUT] * 3, tmp_path / "out")
    seen = []
    with pytest.raises(KeyboardInterrupt):
        seen.extend(runner.run(jobs, lambda item: None))
    assert not [t for t in threading.enumerate() if t.name.startswith("ented-")]
    assert not temp_files(tmp_path)
    written = sorted((tmp_path / "out").iterdir())
    # the first image surely, the second if its write had begun; nothing after the interrupt
    assert jobs[0].output in written and set(written) <= {jobs[0].output, jobs[1].output}
    assert seen == jobs[: len(seen)] and len(seen) <= 2
    for path in written:
        assert cv2.imread(str(path)) is not None, path  # complete, decodable
    assert pipeline.restorer is restorer


SIGINT_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from ented_cli.paths import InputItem
    from ented_cli.pipeline.batch import BatchRunner, make_job
    from ented_cli.pipeline.restore import RestoreOptions, RestorePipeline

    out = Path(sys.argv[1])
    images = [Path(p) for p in sys.argv[2:]] * 20
    pipeline = RestorePipeline.from_weights(None, RestoreOptions(guard=False), device="cpu")
    runner = BatchRunner(pipeline, batch_size=1, workers=2)
    jobs = [make_job(InputItem(p, str(p), p.name), out / f"{i:03d}{p.suffix}")
            for i, p in enumerate(images)]
    for job in runner.run(jobs, lambda item: None):
        print("written", job.output, flush=True)
    """
)


@pytest.mark.slow
def test_sigint_during_a_worker_run_exits_promptly_without_temp_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, "-c", SIGINT_SCRIPT, out, DEGRADED, HOPPER, ASTRONAUT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        # A child inherits an ignored SIGINT (some libraries ignore it in the test process), and
        # Python then never raises KeyboardInterrupt: give it the default, as a shell would.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        first = proc.stdout.readline()  # the model is loaded and the workers are running
        assert first.startswith("written"), proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        proc.wait(timeout=60)
        stopped_after = time.monotonic() - start
    finally:
        proc.kill()
    assert proc.returncode != 0 and "KeyboardInterrupt" in proc.stderr.read()
    assert stopped_after < 30  # one image in flight per thread, not the 60 queued
    assert not temp_files(out)
    written = sorted(out.iterdir())
    assert 1 <= len(written) < 60
    for path in written:  # every output that exists is whole
        assert cv2.imread(str(path)) is not None, path


# ---------------------------------------------------------------------------------- WorkerPool
def test_prefetch_keeps_order_and_reads_only_a_few_items_ahead():
    started = []

    def prepare(i):
        started.append(i)
        time.sleep(0.01 * (i % 3))  # items finish out of order
        return i * 10

    with WorkerPool(2, ahead=3) as pool:
        got = []
        for value in pool.prefetch(range(12), prepare):
            time.sleep(0.02)  # a slow consumer (the restorer)
            assert len(started) <= len(got) + 1 + 3  # consumed + this one + at most `ahead`
            got.append(value)
    assert got == [i * 10 for i in range(12)]


def test_writer_yields_in_order_and_holds_at_most_one_batch_back():
    written = []

    def write(item):
        time.sleep(0.005)
        written.append(item)

    yielded = []
    with WorkerPool(1) as pool:
        for start in range(0, 12, 3):
            batch = list(range(start, start + 3))
            yielded += list(pool.write(batch, write))
            assert yielded == list(range(len(yielded)))
            assert len(yielded) >= start  # every earlier batch is done before this one is queued
        yielded += list(pool.drain())
    assert yielded == written == list(range(12))


def test_an_error_in_a_worker_reaches_the_caller_and_stops_the_pool():
    def prepare(i):
        if i == 2:
            raise ValueError("bug")
        return i

    with pytest.raises(ValueError, match="bug"), WorkerPool(2) as pool:
        list(pool.prefetch(range(50), prepare))
    assert not [t for t in threading.enumerate() if t.name.startswith("ented-")]
