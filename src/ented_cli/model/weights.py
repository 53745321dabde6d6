"""The weights store: sharded fp16 safetensors + a JSON manifest with sha256 sums.

A weight set is ``<name>.json`` next to ``<name>-00001-of-0000N.safetensors`` shards. Each shard's
safetensors metadata repeats the name and config, so one shard given alone still describes itself.
Nothing here unpickles; torch and huggingface_hub are imported inside functions so that
``import ented_cli.model.weights`` (and ``ented weights list``) stays fast.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import posixpath
import re
import struct
import time
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

_SHARD_RE = re.compile(r"^(?P<name>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.safetensors$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_LFS_POINTER = b"version https://git-lfs"
_HASH_CHUNK = 4 * 2**20
_SETTLED_S = 2.0
# sha256 of files already hashed in this process, keyed by what changes when a file is rewritten,
# so a batch that resolves the same weights many times hashes them once.
_VERIFIED: dict[tuple[str, int, int, int, int], str] = {}


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
        if self.manifest is None or not isinstance(card, str):
            return None
        path = self.manifest.parent / card
        return path if path.is_file() else None

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.shards if p.exists())


# ---------------------------------------------------------------------------------------- saving


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
) -> Path:
    """Write ``state_dict`` as a weight set in ``out_dir`` and return the manifest path.

    Floating tensors are stored as ``dtype`` (float16 by default); integer and bool tensors as
    they are. Every file is written to a temporary name and moved into place.
    """
    import safetensors.torch
    import torch

    if not _NAME_RE.match(name):
        raise UsageError(
            f"weights name {name!r} is not a plain file name; use letters, digits, '.-_'"
        )
    dtype = _torch_dtype(dtype if dtype is not None else torch.float16)
    config_json = _json_or_raise(config, "config")
    extra_json = json.loads(_json_or_raise(extra or {}, "extra"))
    if not state_dict:
        raise WeightsError(f"refusing to save weights {name!r}: the state dict is empty")

    tensors = _prepare_tensors(state_dict, dtype)
    metadata = {
        "ented_format": FORMAT,
        "ented_name": name,
        "ented_architecture": architecture,
        "ented_config": config_json,
    }
    groups = _partition(tensors, metadata, max_shard_bytes)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for index, keys in enumerate(groups, start=1):
        file = f"{name}-{index:05d}-of-{len(groups):05d}.safetensors"
        blob = safetensors.torch.save({k: tensors[k] for k in keys}, metadata=metadata)
        if len(blob) > max_shard_bytes:  # the header estimate in _partition was too small
            raise WeightsError(
                f"shard {file} came out at {len(blob)} bytes, over {max_shard_bytes}"
            )
        write_atomic(out_dir / file, blob)
        entries.append(
            {"file": file, "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
        )

    manifest = {
        "format": FORMAT,
        "name": name,
        "architecture": architecture,
        "config": json.loads(config_json),
        "dtype": str(dtype).removeprefix("torch."),
        "shards": entries,
        "card": card,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "extra": extra_json,
    }
    manifest_path = out_dir / f"{name}.json"
    write_atomic(manifest_path, (json.dumps(manifest, indent=2) + "\n").encode())
    _remove_stale_shards(out_dir, name, {e["file"] for e in entries})
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


def _partition(
    tensors: Mapping[str, torch.Tensor], metadata: dict, max_shard_bytes: int
) -> list[list[str]]:
    """Group keys (in order) into shards whose files, header included, fit max_shard_bytes."""
    base = len(json.dumps({"__metadata__": metadata})) + 64
    groups: list[list[str]] = []
    current: list[str] = []
    used = base
    for key, tensor in tensors.items():
        entry = {key: {"dtype": "BF16", "shape": list(tensor.shape), "data_offsets": [10**12] * 2}}
        need = tensor.numel() * tensor.element_size() + len(json.dumps(entry)) + 8
        if base + need > max_shard_bytes:
            raise WeightsError(
                f"tensor {key!r} needs {need} bytes, more than the {max_shard_bytes}-byte shard "
                "limit; raise max_shard_bytes"
            )
        if current and used + need > max_shard_bytes:
            groups.append(current)
            current, used = [], base
        current.append(key)
        used += need
    groups.append(current)
    return groups


def _remove_stale_shards(out_dir: Path, name: str, keep: set[str]) -> None:
    """Delete shards of an earlier save under the same name that the new manifest no longer lists."""
    for path in out_dir.glob(f"{glob.escape(name)}-*-of-*.safetensors"):
        match = _SHARD_RE.match(path.name)
        if match and match["name"] == name and path.name not in keep:
            path.unlink(missing_ok=True)


def _torch_dtype(dtype: Any) -> torch.dtype:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise UsageError(f"unknown dtype {dtype!r}; use float16, bfloat16 or float32")
    return value


def _json_or_raise(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"weights {what} must be plain JSON: {exc}") from exc


# ------------------------------------------------------------------------------ loading, checking


def load_state_dict(
    ws: WeightSet, *, verify: bool = True, dtype: torch.dtype | str | None = None
) -> dict[str, torch.Tensor]:
    """Read every shard of ``ws`` into one CPU state dict (after checking sha256 sums if asked).

    Each shard is read once and the bytes that are checked are the bytes that are parsed, so a
    shard replaced between the check and the load cannot slip through. Every shard is checked
    before any is parsed: a damaged set raises before a single tensor exists.
    """
    import safetensors.torch

    if not ws.shards:
        raise WeightsError(f"weights '{_where(ws)}' list no shards; re-export the weights")
    entries = (ws.info.get("shards") or []) if ws.manifest is not None else []
    if verify and ws.manifest is not None and len(entries) != len(ws.shards):
        raise WeightsError(
            f"manifest '{ws.manifest}' lists {len(entries)} shard(s) for {len(ws.shards)} files; "
            "re-download the weight set"
        )
    blobs: list[tuple[Path, bytes]] = []
    problems: list[str] = []
    for index, path in enumerate(ws.shards):
        data, problem = _read_shard(path)
        if problem is None and verify:
            if ws.manifest is not None:
                problem = _entry_problem(path, data, entries[index], ws.manifest)
            else:  # a bare file has no sha256 to check; its header must at least be whole
                problem = _check_header(path)
        if problem:
            problems.append(problem)
        else:
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
                f"shard '{path}' cannot be read ({_first_line(exc)}); re-copy or re-download "
                "the weight set"
            ) from exc
        for key, tensor in part.items():
            if key in state:
                raise WeightsError(f"tensor {key!r} appears in two shards of '{_where(ws)}'")
            if target is not None and tensor.is_floating_point():
                tensor = tensor.to(target)
            state[key] = tensor
    return state


def _read_shard(path: Path) -> tuple[bytes, str | None]:
    """The shard's bytes, or a problem line when it is missing or unreadable."""
    problem = _check_file(path)
    if problem:
        return b"", problem
    try:
        return path.read_bytes(), None
    except OSError as exc:
        return b"", f"shard '{path}' cannot be read ({_first_line(exc)}); check its permissions"


def verify_weight_set(ws: WeightSet) -> list[str]:
    """Check every shard against the manifest; return one line per problem ([] = fine)."""
    problems = []
    if ws.manifest is None:
        for path in ws.shards:
            problem = _check_file(path) or _check_header(path)
            if problem:
                problems.append(problem)
        return problems

    entries = ws.info.get("shards") or []
    if not entries:
        return [f"manifest '{ws.manifest}' lists no shards; re-export the weights"]
    for entry, path in zip(entries, ws.shards):
        problem = (
            _check_file(path)
            or _entry_problem(path, None, entry, ws.manifest)
            or _check_header(path)
        )
        if problem:
            problems.append(problem)
    return problems


def _check_file(path: Path) -> str | None:
    if not path.is_file():
        return f"shard '{path}' is missing; re-download it or re-export the weights"
    return None


_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def _entry_problem(path: Path, data: bytes | None, entry: dict, manifest: Path) -> str | None:
    """Size and sha256 of a shard (its bytes `data`, or the file) against its manifest entry."""
    size = path.stat().st_size if data is None else len(data)
    expected = entry.get("bytes")
    if isinstance(expected, int) and size != expected:
        if _is_lfs_pointer(path):
            return f"shard '{path}' is a Git LFS pointer, not the weights; run `git lfs pull`"
        what = "truncated" if size < expected else "the wrong size"
        return (
            f"shard '{path}' is {what} ({size} bytes, manifest says {expected}); re-copy or "
            "re-download the weight set (`ented weights verify` checks it)"
        )
    listed = str(entry.get("sha256", "")).lower()
    if not _SHA256_RE.match(listed):
        return (
            f"manifest '{manifest}' gives no valid sha256 for shard '{path.name}'; re-download "
            "the manifest or re-export the weights"
        )
    digest = file_sha256(path) if data is None else hashlib.sha256(data).hexdigest()
    if digest != listed:
        return (
            f"shard '{path}' is corrupt (sha256 differs from manifest '{manifest.name}'); "
            "re-copy or re-download the weight set (`ented weights verify` checks it)"
        )
    return None


def _check_header(path: Path) -> str | None:
    try:
        read_safetensors_header(path)
    except WeightsError as exc:
        return str(exc)
    return None


def file_sha256(path: Path) -> str:
    """sha256 of a file, hashed in chunks and remembered for this process while it is unchanged."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    digest = _VERIFIED.get(key)
    if digest is None:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(_HASH_CHUNK):
                h.update(chunk)
        digest = h.hexdigest()
        # File times tick coarsely (a few ms), so a file written just now could change again
        # without its key changing: only remember files that were already settled (as git does).
        if time.time() - st.st_mtime > _SETTLED_S:
            _VERIFIED[key] = digest
    return digest


def read_safetensors_header(path: Path) -> dict:
    """The JSON header of a safetensors file, checked for a consistent layout (no torch needed)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if head == _LFS_POINTER[:8] and _is_lfs_pointer(path):
                raise WeightsError(
                    f"'{path}' is a Git LFS pointer, not the weights; run `git lfs pull`"
                )
            if len(head) < 8:
                raise WeightsError(
                    f"'{path}' is truncated (not a safetensors file); re-download it"
                )
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, 100 * 2**20):
                raise WeightsError(
                    f"'{path}' has an unreadable header (truncated or not safetensors); re-download it"
                )
            header = json.loads(f.read(length))
    except OSError as exc:
        raise WeightsError(f"'{path}' cannot be read ({_first_line(exc)}); check the path") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"'{path}' has an unreadable header (not safetensors?); re-download it"
        ) from exc
    if not isinstance(header, dict):
        raise WeightsError(f"'{path}' has an unreadable header (not safetensors?); re-download it")
    try:
        end = max(
            (int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0
        )
    except (TypeError, KeyError, IndexError, ValueError) as exc:
        raise WeightsError(f"'{path}' has a malformed safetensors header; re-download it") from exc
    if 8 + length + end != size:
        what = "truncated" if 8 + length + end > size else "longer than its header says"
        raise WeightsError(f"'{path}' is {what}; re-download it or run `ented weights verify`")
    return header


def _is_lfs_pointer(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(_LFS_POINTER)) == _LFS_POINTER
    except OSError:
        return False


# ------------------------------------------------------------------------------------- finding


def bundled_weights_dir() -> Path:
    """The repository's ``weights/`` folder (src/ented_cli/model/weights.py → ../../../weights)."""
    return Path(__file__).resolve().parents[3] / "weights"


def weights_dirs(weights_dir: Path | None = None) -> list[Path]:
    """Folders searched for registered names: ``weights_dir``, else ENTED_WEIGHTS_DIR + bundled."""
    if weights_dir is not None:
        return [Path(weights_dir).expanduser()]
    dirs = []
    env = os.environ.get("ENTED_WEIGHTS_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(bundled_weights_dir())
    return dirs


def resolve_weights(
    spec: str | os.PathLike | None = None,
    *,
    download: bool = False,
    weights_dir: Path | None = None,
) -> WeightSet:
    """Find a weight set: ``spec`` (--weights) → ENTED_WEIGHTS → the weights dir(s).

    ``spec`` may be a manifest .json, a folder, a .safetensors file, a registered name such as
    ``ented-256-preview`` or ``hf://owner/repo[@revision]/path/name.json`` (the Hugging Face
    cache; the network only with ``download=True``).
    """
    if spec is not None and str(spec) != "":
        return _resolve_spec(str(spec), download, weights_dir, origin="--weights")
    env = os.environ.get("ENTED_WEIGHTS")
    if env:
        return _resolve_spec(env, download, weights_dir, origin="ENTED_WEIGHTS")
    dirs = weights_dirs(weights_dir)
    for folder in dirs:
        found = _find_in_dir(folder, DEFAULT_NAME) or _only_manifest(folder)
        if found is not None:
            return _from_manifest(found, origin=f"weights dir {folder}")
    looked = ", ".join(f"'{d}'" for d in dirs)
    raise WeightsError(
        f"no ented weights found ({DEFAULT_NAME}.json not in {looked}); pass --weights PATH, set "
        f"ENTED_WEIGHTS, or use --weights hf://OWNER/REPO/{DEFAULT_NAME}.json --download"
    )


def list_weight_sets(weights_dir: Path | None = None) -> list[WeightSet]:
    """Every readable weight set in the weights dir(s), each folder and one level of subfolders."""
    seen: set[Path] = set()
    sets = []
    for folder in weights_dirs(weights_dir):
        for path in _manifest_candidates(folder):
            if path.resolve() in seen:
                continue
            try:
                ws = _from_manifest(path, origin=f"weights dir {folder}")
            except WeightsError:
                continue  # not ours, or damaged: `ented weights verify PATH` says why
            seen.add(path.resolve())
            sets.append(ws)
    return sets


def _resolve_spec(spec: str, download: bool, weights_dir: Path | None, origin: str) -> WeightSet:
    if origin == "ENTED_WEIGHTS":
        label, fix = f"ENTED_WEIGHTS='{spec}'", "point ENTED_WEIGHTS at a weights .json or unset it"
    else:
        label, fix = f"weights '{spec}'", "pass --weights PATH or set ENTED_WEIGHTS"
    if spec.startswith("hf://"):
        return _resolve_hf(spec, download, origin)
    path = Path(spec).expanduser()
    if path.is_dir():
        return _from_folder(path, origin)
    if path.is_file():
        if path.suffix == ".json":
            return _from_manifest(path, origin)
        if path.suffix == ".safetensors":
            return _from_bare(path, origin)
        raise WeightsError(f"{label} is neither a .json manifest nor a .safetensors file; {fix}")
    if _NAME_RE.match(spec) and path.suffix not in (".json", ".safetensors"):
        dirs = weights_dirs(weights_dir)
        for folder in dirs:
            found = _find_in_dir(folder, spec)
            if found is not None:
                return _from_manifest(found, origin)
        looked = ", ".join(f"'{d}'" for d in dirs)
        raise WeightsError(f"{label} not found (no {spec}.json in {looked}); {fix}")
    raise WeightsError(f"{label} not found; {fix}")


def _find_in_dir(folder: Path, name: str) -> Path | None:
    for path in (folder / f"{name}.json", folder / name / f"{name}.json"):
        if path.is_file():
            return path
    return None


def _manifest_candidates(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(folder.glob("*.json")) + sorted(folder.glob("*/*.json"))


def _is_manifest(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and str(data.get("format", "")).startswith("ented-weights/")


def _only_manifest(folder: Path) -> Path | None:
    if not folder.is_dir():
        return None
    manifests = [p for p in sorted(folder.glob("*.json")) if _is_manifest(p)]
    return manifests[0] if len(manifests) == 1 else None


def _from_folder(folder: Path, origin: str) -> WeightSet:
    manifests = [p for p in sorted(folder.glob("*.json")) if _is_manifest(p)]
    if len(manifests) == 1:
        return _from_manifest(manifests[0], origin)
    if len(manifests) > 1:
        for path in manifests:
            if path.name == f"{DEFAULT_NAME}.json":
                return _from_manifest(path, origin)
        names = ", ".join(p.name for p in manifests)
        raise WeightsError(
            f"folder '{folder}' holds several weight sets ({names}); pass one .json file to --weights"
        )
    # No manifest: accept a folder that holds the shards of exactly one set (or one plain file).
    files = sorted(folder.glob("*.safetensors"))
    stems = {(m["name"] if (m := _SHARD_RE.match(p.name)) else p.stem) for p in files}
    if len(stems) == 1:
        return _from_bare(files[0], origin)
    raise WeightsError(
        f"folder '{folder}' holds no ented weights manifest (*.json); pass a .json or "
        ".safetensors file to --weights"
    )


def _from_manifest(path: Path, origin: str, shards: list[Path] | None = None) -> WeightSet:
    info = _read_manifest(path)
    if shards is None:
        shards = [path.parent / entry["file"] for entry in info["shards"]]
    config = info.get("config") or {}
    return WeightSet(
        name=str(info.get("name") or path.stem),
        manifest=path,
        shards=shards,
        config=config,
        info=info,
        origin=origin,
    )


def _read_manifest(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WeightsError(
            f"weights manifest '{path}' cannot be read ({_first_line(exc)})"
        ) from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"weights manifest '{path}' is not valid JSON ({_first_line(exc)}); re-download it"
        ) from exc
    fmt = info.get("format") if isinstance(info, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith("ented-weights/"):
        raise WeightsError(
            f'\'{path}\' is not an ented weights manifest (no "format": "{FORMAT}"); pass the '
            "weight set's .json file"
        )
    if fmt != FORMAT:
        raise WeightsError(
            f"weights manifest '{path}' has format {fmt!r}, this ented reads {FORMAT!r}; "
            "upgrade ented"
        )
    shards = info.get("shards")
    if not isinstance(shards, list) or not shards:
        raise WeightsError(f"weights manifest '{path}' lists no shards; re-export the weights")
    for entry in shards:
        file = entry.get("file") if isinstance(entry, dict) else None
        # Only plain names: a manifest from the internet must not point outside its own folder.
        if not isinstance(file, str) or not file or Path(file).name != file or file.startswith("."):
            raise WeightsError(
                f"weights manifest '{path}' has a bad shard entry {entry!r}; re-download it"
            )
    if not isinstance(info.get("config", {}), dict):
        raise WeightsError(f"weights manifest '{path}' has a non-object \"config\"; re-export it")
    return info


def _from_bare(path: Path, origin: str, siblings: list[Path] | None = None) -> WeightSet:
    """A .safetensors file given alone: name and config come from its metadata.

    A shard of a multi-shard set brings its siblings (same name, same count) along, so the state
    dict is complete; there is no sha256 to check without the manifest.
    """
    header = read_safetensors_header(path)
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        meta = {}
    match = _SHARD_RE.match(path.name)
    name = str(meta.get("ented_name") or (match["name"] if match else path.stem))
    try:
        config = json.loads(meta.get("ented_config") or "{}")
    except json.JSONDecodeError as exc:
        raise WeightsError(
            f"'{path}' carries unreadable ented_config metadata; re-export it"
        ) from exc
    if siblings is None:
        siblings = [path]
        if match:
            count = int(match["count"])
            siblings = [
                path.with_name(f"{match['name']}-{i:05d}-of-{count:05d}.safetensors")
                for i in range(1, count + 1)
            ]
            for sibling in siblings:
                if not sibling.is_file():
                    raise WeightsError(
                        f"shard '{sibling}' (part of '{path.name}') is missing; put all "
                        f"{count} shards in one folder or pass the .json manifest"
                    )
    return WeightSet(
        name=name,
        manifest=None,
        shards=siblings,
        config=config if isinstance(config, dict) else {},
        info=dict(meta),
        origin=origin,
    )


# --------------------------------------------------------------------------------- Hugging Face


def _hf_cache_dir() -> str | None:
    """The hub cache, read from the environment now (huggingface_hub reads it once at import)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expanduser(os.environ[var])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _hf_offline_env() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """``hf://owner/repo[@revision][/path/file]`` → (repo_id, revision, filename)."""
    parts = spec.removeprefix("hf://").strip("/").split("/", 2)
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise WeightsError(
            f"weights '{spec}' is not a Hugging Face spec; write hf://OWNER/REPO/{DEFAULT_NAME}.json"
        )
    repo, _, revision = parts[1].partition("@")
    filename = parts[2] if len(parts) == 3 and parts[2] else f"{DEFAULT_NAME}.json"
    return f"{parts[0]}/{repo}", (revision or None), filename


def _resolve_hf(spec: str, download: bool, origin: str) -> WeightSet:
    repo_id, revision, filename = parse_hf_spec(spec)
    if not filename.endswith((".json", ".safetensors")):
        raise WeightsError(
            f"weights '{spec}' must name a .json manifest or a .safetensors file in the repository"
        )
    first = Path(_hf_fetch(spec, repo_id, revision, filename, download))
    # Fetch the shards from the very snapshot the manifest came from.
    revision = _snapshot_commit(first) or revision
    folder = posixpath.dirname(filename)

    def fetch(name: str) -> Path:
        return Path(_hf_fetch(spec, repo_id, revision, posixpath.join(folder, name), download))

    origin = f"{origin} (Hugging Face {repo_id})"
    if filename.endswith(".json"):
        info = _read_manifest(first)
        shards = [fetch(entry["file"]) for entry in info["shards"]]
        return _from_manifest(first, origin, shards=shards)
    match = _SHARD_RE.match(posixpath.basename(filename))
    siblings = None
    if match:
        count = int(match["count"])
        siblings = [
            fetch(f"{match['name']}-{i:05d}-of-{count:05d}.safetensors")
            for i in range(1, count + 1)
        ]
    return _from_bare(first, origin, siblings=siblings)


def _hf_fetch(spec: str, repo_id: str, revision: str | None, filename: str, download: bool) -> str:
    """One file from the hub cache (or the Hub when downloading), errors turned into one line."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    offline_env = _hf_offline_env()
    what = f"weights '{spec}'" if spec.endswith(filename) else f"'{filename}' of '{spec}'"

    def fetch(local_only: bool) -> str:
        return hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=_hf_cache_dir(),
            local_files_only=local_only,
        )

    try:
        # The cache first, even with --download: a cached file needs no network round trip.
        try:
            return fetch(local_only=True)
        except LocalEntryNotFoundError:
            if not download or offline_env:
                raise
        return fetch(local_only=False)
    except LocalEntryNotFoundError as exc:
        if not download:
            fix = "add --download to fetch it"
        elif offline_env:
            fix = "unset HF_HUB_OFFLINE to download it"
        else:
            fix = "the Hub could not be reached; check your network"
        raise WeightsError(f"{what} not in the Hugging Face cache; {fix}") from exc
    except RevisionNotFoundError as exc:
        raise WeightsError(f"revision '{revision}' of '{repo_id}' not found on the Hub") from exc
    except RepositoryNotFoundError as exc:
        raise WeightsError(
            f"repository '{repo_id}' not found on the Hugging Face Hub (if private, run "
            "`hf auth login`); fix the hf:// spec"
        ) from exc
    except EntryNotFoundError as exc:
        raise WeightsError(f"{what} not found in '{repo_id}' on the Hub; fix the path") from exc
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsError(
            f"{what} could not be downloaded ({_first_line(exc)}); check your network"
        ) from exc
    except ValueError as exc:  # a malformed repo id or file name
        raise WeightsError(
            f"'{spec}' is not a valid Hugging Face spec ({_first_line(exc)})"
        ) from exc


def _snapshot_commit(path: Path) -> str | None:
    parts = path.parts
    for i, part in enumerate(parts[:-1]):
        if part == "snapshots" and i + 1 < len(parts) - 1:
            return parts[i + 1]
    return None


# -------------------------------------------------------------------------------------- helpers


def _where(ws: WeightSet) -> str:
    return str(ws.manifest or (ws.shards[0] if ws.shards else ws.name))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
