"""What the numbers were measured on: CPU, cores, load, library versions, accelerators."""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return cpu_model()


def machine_info() -> dict:
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    try:
        load = round(os.getloadavg()[0], 2)  # a busy machine explains noisy numbers
    except (AttributeError, OSError):
        load = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": usable,
        "load_average_1m": load,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),  # torch's count now (each run says its own)
        # OpenMP settings torch read at import: a spinning wait policy slows a busy machine
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "onnxruntime": _version("onnxruntime"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
