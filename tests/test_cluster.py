"""`ented restore --cluster` on a real Ray cluster on this machine (a head and a second node, each
a raylet of its own): the same files as one machine, byte for byte; a generator worker killed
mid-job; a killed job resumed with --skip-existing; out of memory inside the workers; and a
`--cluster local` run. The CLI runs as a subprocess, as a user runs it; the cluster is the tests'.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from click.testing import CliRunner

from tests.conftest import EXAMPLES, ROOT

ASTRONAUT = EXAMPLES / "astronaut.png"
DEGRADED = EXAMPLES / "astronaut_degraded.jpg"
HOPPER = EXAMPLES / "grace_hopper.jpg"
GOOD = 5  # photos the folder holds besides the broken one
STORE = 300 * 2**20  # object store per node: small, beside the training runs of this machine


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def outputs(folder: Path) -> dict[str, str]:
    """name -> sha256 of every file in `folder`, hidden ones (temp files) included."""
    return {p.name: sha(p) for p in sorted(folder.iterdir())} if folder.is_dir() else {}


def ented(*args, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ented_cli", "restore", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def start_ented(*args, cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "ented_cli", "restore", *map(str, args)]
    return subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def reports(stdout: str) -> dict[str, dict]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    by_input = {r["input"]: r for r in lines}
    assert len(by_input) == len(lines), "an input was reported twice"
    return by_input


def comparable(report: dict) -> dict:
    """A report without what differs between two runs: timings and the output folder's name."""
    drop = ("timing_ms", "output")
    return {k: v for k, v in report.items() if k not in drop}


def generator_pids() -> list[int]:
    """Processes of live generator actors ("ray::MapWorker(MapBatches(Generate))")."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"MapBatches(Generate)" in command and state != "Z":
            pids.append(int(proc.name))
    return pids


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder of real photos (copies, a flip and a crop of the examples), one photo without a
    face and one broken file; the runs work in this folder with relative paths."""
    root = tmp_path_factory.mktemp("cluster")
    photos = root / "photos"
    photos.mkdir()
    (photos / "a_astronaut.jpg").write_bytes(DEGRADED.read_bytes())
    cv2.imwrite(str(photos / "b_astronaut_flipped.png"), cv2.imread(str(DEGRADED))[:, ::-1])
    (photos / "c_hopper.jpg").write_bytes(HOPPER.read_bytes())
    cv2.imwrite(str(photos / "d_hopper_crop.jpg"), cv2.imread(str(HOPPER))[60:460, 40:440])
    cv2.imwrite(str(photos / "e_suit.png"), cv2.imread(str(ASTRONAUT))[:, 330:])  # no face
    (photos / "g_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a photo")
    two = root / "two"  # for --cluster local, whose start-up is the slow part
    two.mkdir()
    for name in ("a_astronaut.jpg", "e_suit.png"):
        (two / name).write_bytes((photos / name).read_bytes())
    return root


ARGS = ("photos", "--ref", ASTRONAUT, "--json")


@pytest.fixture(scope="module")
def single(work) -> dict:
    """The single-machine run everything is compared with."""
    run = ented(*ARGS, "-o", "single", cwd=work)
    assert run.returncode == 3, run.stderr  # the broken photo fails, the rest are written
    return {"files": outputs(work / "single"), "reports": reports(run.stdout)}


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node on this machine, 3 logical CPUs each (room for 2 generator
    workers, their readers and writers), small object stores; stopped at the end."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    head = {"num_cpus": 3, "object_store_memory": STORE, "include_dashboard": False}
    nodes = Cluster(initialize_head=True, head_node_args=head)
    try:
        nodes.add_node(num_cpus=3, object_store_memory=STORE)
        nodes.wait_for_nodes()
        yield nodes
    finally:
        nodes.shutdown()


@pytest.mark.slow
def test_a_cluster_run_survives_a_killed_generator_and_writes_the_same_bytes(work, single, cluster):
    run = start_ented(*ARGS, "-o", "spread", "--cluster", cluster.address, "--workers", 2, cwd=work)
    killed, written_then = None, None
    deadline = time.monotonic() + 600
    while run.poll() is None and time.monotonic() < deadline:
        written = [p for p in (work / "spread").glob("*") if not p.name.startswith(".")]
        pids = generator_pids()
        if killed is None and written and pids:  # mid-job: a photo written, more to come
            killed, written_then = pids[0], len(written)
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.1)
    stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 3, stderr
    assert killed is not None and written_then < GOOD, "the worker was not killed mid-job"
    assert killed not in generator_pids()

    # Every photo written once, none lost, no temporary or torn file, the same bytes.
    assert outputs(work / "spread") == single["files"]
    assert len(single["files"]) == GOOD
    got = reports(stdout)
    assert {k: comparable(v) for k, v in got.items()} == {
        k: comparable(v) for k, v in single["reports"].items()
    }
    assert got["photos/g_broken.jpg"]["status"] == "error"  # one line, and the job went on
    assert "ented: error: photos/g_broken.jpg" in stderr
    assert "images/s on 2 node(s), 2 generator worker(s)" in stderr


@pytest.mark.slow
def test_a_killed_job_resumes_with_skip_existing(work, single, cluster):
    out = work / "resumed"
    run = start_ented(*ARGS, "-o", out.name, "--cluster", cluster.address, "--workers", 2, cwd=work)
    deadline = time.monotonic() + 600
    while run.poll() is None and time.monotonic() < deadline:
        if any(not p.name.startswith(".") for p in out.glob("*")):
            run.send_signal(signal.SIGKILL)  # the whole job: its driver dies
            break
        time.sleep(0.1)
    run.communicate(timeout=60)
    done = {n: h for n, h in outputs(out).items() if not n.startswith(".")}
    assert 0 < len(done) < GOOD, "the job was not killed mid-way"
    assert all(single["files"][n] == h for n, h in done.items())  # what was written is whole

    again = ented(*ARGS, "-o", out.name, "--cluster", cluster.address, "--skip-existing", cwd=work)
    assert again.returncode == 3, again.stderr
    statuses = {k: v["status"] for k, v in reports(again.stdout).items()}
    assert sum(s == "skipped" for s in statuses.values()) == len(done)
    assert len(statuses) == GOOD + 1  # the others restored now, the broken one failed again
    final = {n: h for n, h in outputs(out).items() if not n.startswith(".")}
    assert final == single["files"]


@pytest.mark.slow
def test_out_of_memory_in_a_worker_falls_back_to_smaller_batches(
    work, single, cluster, monkeypatch
):
    """Workers whose device fits one face (tests/cluster_hooks.py) and --batch-size 4: the
    generator runs out of memory, halves its batch inside the actor, and writes the same files
    as one machine at batch 1. This test's process is the driver, so the hook reaches the
    workers through its runtime environment."""
    import ray

    from ented_cli.cli.main import main
    from ented_cli.cluster import runner

    monkeypatch.setattr(runner, "PROGRESS_EVERY_S", 0.0)  # a line per photo in a log

    hooks = {"worker_process_setup_hook": "tests.cluster_hooks.small_device"}
    paths = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    hooks["env_vars"] = {"PYTHONPATH": os.pathsep.join(paths)}  # tests.cluster_hooks
    ray.init(address=cluster.address, runtime_env=hooks, logging_level="ERROR")
    cwd = os.getcwd()
    try:
        os.chdir(work)
        args = [*map(str, ARGS), "-o", "small", "--cluster", "auto", "--batch-size", "4"]
        result = CliRunner().invoke(main, ["restore", *args])
    finally:
        os.chdir(cwd)
        ray.shutdown()
    assert result.exit_code == 3, result.stderr
    assert outputs(work / "small") == single["files"]
    warned = [w for r in reports(result.stdout).values() for w in r.get("warnings", [])]
    assert any("retrying with --batch-size 2" in w for w in warned), warned
    assert "retrying with --batch-size" in result.stderr
    assert f"ented: cluster: {GOOD + 1}/{GOOD + 1} image(s), " in result.stderr  # how far, in a log


@pytest.mark.slow
def test_cluster_local_gives_the_same_files(work, single):
    """`--cluster local`: a new cluster on this machine, started and stopped by the command."""
    run = ented("two", *ARGS[1:], "-o", "local", "--cluster", "local", cwd=work)
    assert run.returncode == 0, run.stderr
    got = outputs(work / "local")
    assert got == {name: single["files"][name] for name in ("a_astronaut.jpg", "e_suit.png")}
    assert "2 image(s) in" in run.stderr and "1 node(s)" in run.stderr


# ------------------------------------------------------------------------- the command line


def test_help_does_not_import_ray():
    code = (
        "import sys\n"
        "from ented_cli.cli.main import main\n"
        "for args in (['--help'], ['restore', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('RAY LOADED' if 'ray' in sys.modules else 'NO RAY')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.stdout.strip().endswith("NO RAY"), run.stdout + run.stderr
    assert "--cluster ADDRESS|auto|local" in run.stdout
    assert "--gpus-per-worker" in run.stdout and "--workers" in run.stdout


def test_cluster_without_ray_is_a_usage_error_that_says_what_to_install(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if the extra were not installed\n"
        "from ented_cli.cli.main import main\n"
        f"main(['restore', {str(DEGRADED)!r}, '-o', {str(tmp_path)!r}, '--cluster', 'local'])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert 'install it with pip install "ented[cluster]"' in run.stderr
    assert not any(tmp_path.iterdir())


def test_an_address_where_no_cluster_answers_is_one_line_at_once(tmp_path):
    import socket

    with socket.socket() as probe:  # a loopback port nothing listens on once it is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    run = ented(DEGRADED, "-o", tmp_path / "out", "--cluster", f"127.0.0.1:{port}", cwd=tmp_path)
    assert run.returncode == 1, run.stderr
    assert f"--cluster 127.0.0.1:{port}: no Ray cluster answers there" in run.stderr
    assert "ray start --head" in run.stderr
    assert time.monotonic() - start < 60  # Ray alone would wait for it for ever
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--workers", "2"], "--workers and --gpus-per-worker need --cluster"),
        (["--gpus-per-worker", "1"], "--workers and --gpus-per-worker need --cluster"),
        (["--cluster", "local", "-o", "-"], "-o -: a cluster writes files"),
    ],
)
def test_cluster_usage_errors(args, message, tmp_path):
    run = ented(DEGRADED, *args, cwd=tmp_path, timeout=120)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
