"""A normal (non-editable) install finds its weights: the sdist and the wheel built from this
checkout carry the default weight set, and the installed `ented restore` uses it.

Everything runs offline: setuptools' own PEP 517 hook builds the sdist, pip builds the wheel from
that sdist without build isolation (what `python -m build` does), and a bare venv outside the
checkout gets the wheel alone. The venv borrows this environment's dependencies through a .pth
file; a site-packages folder added that way does not run its own .pth files, so the editable
install's path to src/ stays out and only the wheel's ented_cli can be imported.
"""

import json
import os
import shutil
import site
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import EXAMPLES, ROOT

NAME = "ented-256-preview"
SHIPPED = (f"{NAME}.json", f"{NAME}-00001-of-00001.safetensors")
# What a build reads; copied out so building leaves no build/ or egg-info in the checkout.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE")


def run(*args, cwd, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def checked(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"{result.args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def copy_checkout(dest: Path) -> Path:
    dest.mkdir()
    for name in BUILD_INPUTS:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", dest / "src", ignore=ignore)
    shutil.copytree(ROOT / "weights", dest / "weights", ignore=ignore)  # campaign/ included
    return dest


def build_wheel(tmp_path: Path) -> Path:
    """checkout → sdist → wheel, the way an index gets them; also checks the sdist's contents."""
    tree, dist = copy_checkout(tmp_path / "checkout"), tmp_path / "dist"
    hook = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    sdist = dist / checked(run(sys.executable, "-c", hook, dist, cwd=tree)).splitlines()[-1]
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    top = members[0].split("/")[0]
    assert {f"{top}/weights/{f}" for f in SHIPPED} <= set(members), members
    assert not [m for m in members if "campaign" in m]

    pip = (sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index")
    checked(run(*pip, "-q", "-w", dist, sdist, cwd=tmp_path))
    (wheel,) = dist.glob("*.whl")
    return wheel


def install_in_fresh_venv(wheel: Path, venv: Path) -> Path:
    """A venv with the wheel alone, its dependencies borrowed from this environment."""
    checked(run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent))
    python = venv / "bin" / "python"
    pip = (sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index")
    checked(run(*pip, "-q", wheel, cwd=venv.parent))
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    purelib = Path(checked(run(python, "-c", where, cwd=venv.parent)).strip())
    # After the wheel is installed, so pip never sees this environment's (editable) ented.
    (purelib / "borrowed_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return purelib


@pytest.mark.slow
def test_installed_wheel_restores_a_photo_with_its_packaged_weights(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        packaged = {n.rsplit("/", 1)[-1]: zf.read(n) for n in names if "/bundled_weights/" in n}
    assert set(SHIPPED) <= set(packaged), names
    assert not [n for n in names if "campaign" in n]
    for file in SHIPPED:  # byte for byte the checkout's weights
        assert packaged[file] == (ROOT / "weights" / file).read_bytes()

    venv = tmp_path / "venv"
    purelib = install_in_fresh_venv(wheel, venv)
    elsewhere = tmp_path / "elsewhere"  # neither the checkout nor the venv
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ENTED_WEIGHTS")}
    env.pop("ENTED_WEIGHTS_DIR", None)
    where = "import ented_cli; print(ented_cli.__file__)"
    imported = checked(run(venv / "bin" / "python", "-c", where, cwd=elsewhere, env=env))
    assert Path(imported.strip()).is_relative_to(purelib)

    ented = venv / "bin" / "ented"
    listed = checked(run(ented, "weights", "list", cwd=elsewhere, env=env))
    assert str(purelib / "ented_cli" / "bundled_weights" / f"{NAME}.json") in listed
    assert "campaign" not in listed
    assert "OK" in checked(run(ented, "weights", "verify", cwd=elsewhere, env=env))

    src, ref, out = EXAMPLES / "astronaut_degraded.jpg", EXAMPLES / "astronaut.png", "fixed.png"
    # --no-guard: this checks the packaging, not whether the guard keeps this face.
    restore = (ented, "restore", src, "--ref", ref, "-o", out, "--json", "--no-guard")
    (report,) = [
        json.loads(line) for line in checked(run(*restore, cwd=elsewhere, env=env)).splitlines()
    ]
    assert report["status"] == "restored", report
    (face,) = report["faces"]
    assert face["restored"] and face["mode"] == "reference"

    before = cv2.imread(str(src)).astype(float)
    after = cv2.imread(str(elsewhere / out)).astype(float)
    x1, y1, x2, y2 = (int(v) for v in face["box"])
    assert np.abs(after - before)[y1:y2, x1:x2].mean() > 2.0  # the face was restored
