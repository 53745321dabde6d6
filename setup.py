"""Build hook: ship the default weight set inside the package, as ``ented_cli/bundled_weights/``.

The weights stay in the checkout's top-level ``weights/`` folder, next to their model card and
the training snapshots in ``weights/campaign/``. For a wheel (and so for ``pip install .`` and
installs from an index) this copies that folder's top-level manifests, shards and model card
into the built package; subfolders are never shipped. MANIFEST.in puts the same files into the
sdist, so a wheel built from the sdist gets them too. Editable installs copy nothing: they read
``weights/`` in place (see ``bundled_weights_dir`` in src/ented_cli/model/weight_lookup.py).
Everything else about the build is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

WEIGHTS = Path(__file__).resolve().parent / "weights"
PACKAGED = Path("ented_cli", "bundled_weights")  # inside the installed package
SHIPPED = ("*.json", "*.safetensors", "README.md")  # the model card carries the licence


def weight_files() -> list[Path]:
    files = sorted(path for pattern in SHIPPED for path in WEIGHTS.glob(pattern))
    if not any(path.suffix == ".safetensors" for path in files):
        # A wheel without weights fails every photo once installed: refuse to build it.
        raise SystemExit(
            f"no weight set (*.json + *.safetensors) in '{WEIGHTS}' to package; restore that "
            "folder (git checkout -- weights) before building"
        )
    return files


class BuildPyWithWeights(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib, PACKAGED)
            self.mkpath(str(target))
            for path in weight_files():
                self.copy_file(str(path), str(target / path.name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        if self.editable_mode:
            return outputs
        return outputs + [str(Path(self.build_lib, PACKAGED, p.name)) for p in weight_files()]


setup(cmdclass={"build_py": BuildPyWithWeights})
