"""The weights store: sharded fp16 safetensors + a JSON manifest with sha256 sums.

A weight set is ``<name>.json`` next to ``<name>-00001-of-0000N.safetensors`` shards whose
safetensors metadata repeats the name and config, so one shard alone still describes itself.
safetensors reads and checks the files and huggingface_hub splits and fetches them; the sha256
checks are ours, as the Hub does not verify downloads. torch and huggingface_hub are imported
inside functions so that ``ented weights list`` stays fast.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ented_cli.errors import UsageError, WeightsError
from ented_cli.imaging.atomic import write_atomic

if TYPE_CHECKING:
    import torch

FORMAT = "ented-weights/1"
DEFAULT_NAME = "ented-256-preview"
MAX_SHARD_BYTES = 16 * 2**20

SHARD_NAME_RE = re.compile(r"^(?P<name>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.safetensors$")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_LFS_POINTER = b"version https://git-lfs"
_REDOWNLOAD = "re-copy or re-download the weight set (`ented weights verify` checks it)"


@dataclass
class WeightSet:
    name: str
    manifest: Path | None  # None when a bare .safetensors file was given
    shards: list[Path]
    config: dict
    info: dict  # the manifest (or the first shard's metadata) as read
    # How it was found ("--weights", "ENTED_WEIGHTS", "weights dir ..."), for `ented weights`.
    origin: str = field(default="", compare=False)

    @property
    def architecture(self) -> str | None:
        return self.info.get("architecture") or self.info.get("ented_architecture")

    @property
    def card(self) -> Path | None:
        """The model card next to the manifest, when the manifest names one that exists."""
        card = self.info.get("card")
        path = self.manifest.parent / card if self.manifest and isinstance(card, str) else None
        return path if path and path.is_file() else None

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.shards if p.exists())


def save_weight_set(
    state_dict: Mapping[str, torch.Tensor],
    out_dir: Path,
    name: str,
    config: dict,
    *,
    architecture: str = "ented-256",
    dtype: torch.dtype | str | None = None,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    extra: dict | None = None,
    card: str | None = "README.md",
    inference_dtypes: dict | None = None,
) -> Path:
    """Write ``state_dict`` as a weight set in ``out_dir`` and return the manifest path.

    Floating tensors are stored as ``dtype`` (float16 by default); integer and bool tensors as
    they are. Every file is written to a temporary name and moved into place.
    ``inference_dtypes``: how safe fp16/bf16 inference measured (`ented_cli.train.export`).
    """
    import safetensors.torch
    import torch
    from huggingface_hub import split_state_dict_into_shards_factory

    if not NAME_RE.match(name):
        raise UsageError(
            f"weights name {name!r} is not a plain file name; use letters, digits, '.-_'"
        )
    dtype = _torch_dtype(dtype if dtype is not None else torch.float16)
    config, extra = _plain_json(config, "config"), _plain_json(extra or {}, "extra")
    if not state_dict:
        raise WeightsError(f"refusing to save weights {name!r}: the state dict is empty")
    tensors = _prepare_tensors(state_dict, dtype)
    metadata = dict(
        ented_format=FORMAT,
        ented_name=name,
        ented_architecture=architecture,
        ented_config=json.dumps(config, sort_keys=True),
    )
    # A tensor costs its bytes plus its header entry (at most the longest, with the longest
    # dtype name); the metadata, the 8-byte length and alignment come once per file. So every
    # file fits max_shard_bytes (the torch splitter would count tensor bytes only).
    header = {
        k: {"dtype": "F8_E4M3", "shape": list(t.shape), "data_offsets": [2**40] * 2}
        for k, t in tensors.items()
    }
    entry = max(len(json.dumps({k: v})) for k, v in header.items())
    room = max_shard_bytes - len(json.dumps({"__metadata__": metadata})) - 16
    for key, tensor in tensors.items():
        if tensor.nbytes + entry > room:
            raise WeightsError(
                f"tensor {key!r} needs {tensor.nbytes + entry + max_shard_bytes - room} bytes, "
                f"more than the {max_shard_bytes}-byte shard limit; raise max_shard_bytes"
            )
    split = split_state_dict_into_shards_factory(
        tensors,
        get_storage_size=lambda tensor: tensor.nbytes + entry,
        filename_pattern=name + "{suffix}.safetensors",
        max_shard_size=room,
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shards = []
    for file, keys in split.filename_to_tensors.items():
        # A lone shard gets no "-00001-of-00001" from the splitter; ours are always numbered.
        file = file if split.is_sharded else f"{name}-00001-of-00001.safetensors"
        blob = safetensors.torch.save({k: tensors[k] for k in keys}, metadata=metadata)
        write_atomic(out_dir / file, blob)
        shards.append(
            {"file": file, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        )
    manifest = {
        "format": FORMAT,
        "name": name,
        "architecture": architecture,
        "config": config,
        "dtype": str(dtype).removeprefix("torch."),
        "shards": shards,
        "card": card,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "extra": extra,
        "inference_dtypes": _plain_json(inference_dtypes, "inference_dtypes"),
    }
    manifest_path = out_dir / f"{name}.json"
    write_atomic(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    # Shards of an earlier save under the same name that the new manifest no longer lists.
    keep = {shard["file"] for shard in shards}
    for path in out_dir.glob(f"{glob.escape(name)}-*-of-*.safetensors"):
        if (m := SHARD_NAME_RE.match(path.name)) and m["name"] == name and path.name not in keep:
            path.unlink(missing_ok=True)
    return manifest_path


def _prepare_tensors(state_dict: Mapping[str, Any], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    import torch

    out = {}
    for key, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"state dict entry {key!r} is a {type(tensor).__name__}, not a tensor")
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point() and tensor.dtype != dtype:
            converted = tensor.to(dtype)
            # A value that is finite in fp32 but not in fp16 would silently break the model.
            if (torch.isfinite(tensor) & ~torch.isfinite(converted)).any():
                raise WeightsError(
                    f"tensor {key!r} has values too large for {dtype}; save with dtype=torch.float32"
                )
            tensor = converted
        # clone: safetensors refuses tensors that share memory (tied weights, views).
        out[key] = tensor.contiguous().clone()
    return out


def _torch_dtype(dtype: Any) -> torch.dtype:
    import torch

    if not isinstance(dtype, torch.dtype):
        dtype = getattr(torch, str(dtype).removeprefix("torch."), dtype)
    if not isinstance(dtype, torch.dtype):
        raise UsageError(f"unknown dtype {dtype!r}; use float16, bfloat16 or float32")
    return dtype


def _plain_json(value: Any, what: str) -> Any:
    """``value`` as it will read back from the JSON manifest (sorted keys, lists for tuples)."""
    try:
        return json.loads(json.dumps(value, sort_keys=True))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"weights {what} must be plain JSON: {exc}") from exc


def load_state_dict(
    ws: WeightSet, *, verify: bool = True, dtype: torch.dtype | str | None = None
) -> dict[str, torch.Tensor]:
    """Read every shard of ``ws`` into one CPU state dict (after checking sha256 sums if asked).

    Each shard is read once and the bytes that are checked are the bytes that are parsed, so a
    shard replaced between the check and the load cannot slip through. Every shard is checked
    before any is parsed: a damaged set raises before a single tensor exists.
    """
    import safetensors.torch

    blobs, problems = [], []
    for path, entry in zip(ws.shards, _entries(ws)):
        if not path.is_file():
            problems.append(_missing(path))
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            problems.append(
                f"shard '{path}' cannot be read ({first_line(exc)}); check its permissions"
            )
            continue
        if problem := verify and _shard_problem(path, entry, ws.manifest, data):
            problems.append(problem)
        blobs.append((path, data))
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise WeightsError(problems[0] + more)

    target = _torch_dtype(dtype) if dtype is not None else None
    state: dict[str, torch.Tensor] = {}
    for path, data in blobs:
        try:
            part = safetensors.torch.load(data)
        except Exception as exc:  # SafetensorError: the file is damaged
            raise WeightsError(
                f"shard '{path}' cannot be read ({first_line(exc)}); {_REDOWNLOAD}"
            ) from exc
        for key, tensor in part.items():
            if key in state:
                raise WeightsError(
                    f"tensor {key!r} appears in two shards of '{ws.manifest or path}'"
                )
            floating = target is not None and tensor.is_floating_point()
            state[key] = tensor.to(target) if floating else tensor
    return state


def verify_weight_set(ws: WeightSet) -> list[str]:
    """Check every shard against the manifest; return one line per problem ([] = fine)."""
    problems = [
        _shard_problem(path, entry, ws.manifest) for path, entry in zip(ws.shards, _entries(ws))
    ]
    return [p for p in problems if p]


def _entries(ws: WeightSet) -> list[dict | None]:
    """The manifest's entry for each shard; a bare file has none (None: no sha256 to compare)."""
    entries = ws.info.get("shards") if ws.manifest else [None] * len(ws.shards)
    if not ws.shards or not isinstance(entries, list) or len(entries) != len(ws.shards):
        raise WeightsError(
            f"weights '{ws.manifest or ws.name}' list {len(entries or [])} shard(s) for "
            f"{len(ws.shards)} file(s); re-download the weight set or re-export it"
        )
    return entries


def _shard_problem(
    path: Path, entry: dict | None, manifest: Path | None, data: bytes | None = None
) -> str | None:
    """What is wrong with a shard (its bytes ``data``, else the file), or None: size and sha256
    against its manifest entry, and whether safetensors can read its header."""
    if data is None and not path.is_file():
        return _missing(path)
    if entry is not None and manifest is not None:
        size = path.stat().st_size if data is None else len(data)
        expected = entry.get("bytes")
        if isinstance(expected, int) and size != expected:
            if _is_lfs_pointer(path):
                return _lfs_pointer(path)
            what = "truncated" if size < expected else "the wrong size"
            return (
                f"shard '{path}' is {what} ({size} bytes, manifest says {expected}); {_REDOWNLOAD}"
            )
        listed = str(entry.get("sha256", "")).lower()
        if not _SHA256_RE.match(listed):
            return (
                f"manifest '{manifest}' gives no valid sha256 for shard '{path.name}'; "
                "re-download the manifest or re-export the weights"
            )
        digest = file_sha256(path) if data is None else hashlib.sha256(data).hexdigest()
        if digest != listed:
            return (
                f"shard '{path}' is corrupt (sha256 differs from manifest '{manifest.name}'); "
                + _REDOWNLOAD
            )
        if data is not None:  # loading parses these very bytes next, which checks the header
            return None
    try:
        read_metadata(path)
    except WeightsError as exc:
        return str(exc)
    return None


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks by hashlib."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_metadata(path: Path) -> dict:
    """A shard's safetensors metadata (safetensors checks that its header covers the file)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:  # numpy: no torch import just to look
            return dict(f.metadata() or {})
    except OSError as exc:
        raise WeightsError(f"'{path}' cannot be read ({first_line(exc)}); check the path") from exc
    except SafetensorError as exc:
        if _is_lfs_pointer(path):
            raise WeightsError(_lfs_pointer(path)) from exc
        raise WeightsError(
            f"'{path}' is truncated or not a safetensors file ({first_line(exc)}); re-download it "
            "or run `ented weights verify`"
        ) from exc


def _is_lfs_pointer(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(_LFS_POINTER)) == _LFS_POINTER
    except OSError:
        return False


def _lfs_pointer(path: Path) -> str:
    return f"shard '{path}' is a Git LFS pointer, not the weights; run `git lfs pull`"


def _missing(path: Path) -> str:
    return f"shard '{path}' is missing; re-download it or re-export the weights"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for one-line errors."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
