"""Which weight set a `--weights` spec means: a path, a registered name, `$ENTED_WEIGHTS`,
`$ENTED_WEIGHTS_DIR` and the bundled weights (inside the installed package, or the checkout's
`weights/` folder), or `hf://owner/repo/file.json` on the Hugging Face Hub (one
`snapshot_download`, offline unless asked). The files themselves are read and checked by
`ented_cli.model.weights`."""

from __future__ import annotations

import glob
import json
import os
import posixpath
from pathlib import Path
from typing import TYPE_CHECKING

from ented_cli.errors import WeightsError

if TYPE_CHECKING:
    pass

from ented_cli.model.weights import (
    DEFAULT_NAME,
    FORMAT,
    NAME_RE,
    SHARD_NAME_RE,
    WeightSet,
    first_line,
    read_metadata,
)


def bundled_weights_dir() -> Path:
    """The folder of the weights that come with ented, the first of:

    1. ``ented_cli/bundled_weights/``, the package data of a normal install (a wheel, ``pip
       install .``, an index): setup.py copies the checkout's top-level weight files there;
    2. the checkout's top-level ``weights/`` (src/ented_cli/model/ → ../../../weights), for an
       editable install or src/ on sys.path, which have no package copy.
    """
    here = Path(__file__).resolve()
    packaged = here.parents[1] / "bundled_weights"
    return packaged if packaged.is_dir() else here.parents[3] / "weights"


def weights_dirs(weights_dir: Path | None = None) -> list[Path]:
    """Folders searched for registered names and the default set, in order: ``weights_dir`` alone
    when given; else ``$ENTED_WEIGHTS_DIR`` (when set), then the bundled weights (package data,
    else the checkout's ``weights/``; see ``bundled_weights_dir``)."""
    if weights_dir is not None:
        return [Path(weights_dir).expanduser()]
    env = os.environ.get("ENTED_WEIGHTS_DIR")
    return ([Path(env).expanduser()] if env else []) + [bundled_weights_dir()]


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
    if env := os.environ.get("ENTED_WEIGHTS"):
        return _resolve_spec(env, download, weights_dir, origin="ENTED_WEIGHTS")
    dirs = weights_dirs(weights_dir)
    for folder in dirs:
        if found := _find_in_dir(folder, DEFAULT_NAME) or _only_manifest(folder):
            return _from_manifest(found, origin=f"weights dir {folder}")
    raise WeightsError(
        f"no ented weights found ({DEFAULT_NAME}.json not in {_quoted(dirs)}); pass --weights "
        f"PATH, set ENTED_WEIGHTS, or use --weights hf://OWNER/REPO/{DEFAULT_NAME}.json --download"
    )


def list_weight_sets(weights_dir: Path | None = None) -> list[WeightSet]:
    """Every readable weight set in the weights dir(s), each folder and one level of subfolders."""
    sets: dict[Path, WeightSet] = {}
    for folder in weights_dirs(weights_dir):
        for path in sorted(folder.glob("*.json")) + sorted(folder.glob("*/*.json")):
            try:
                sets.setdefault(path.resolve(), _from_manifest(path, f"weights dir {folder}"))
            except WeightsError:
                continue  # not ours, or damaged: `ented weights verify PATH` says why
    return list(sets.values())


def _resolve_spec(spec: str, download: bool, weights_dir: Path | None, origin: str) -> WeightSet:
    if origin == "ENTED_WEIGHTS":
        label, fix = f"ENTED_WEIGHTS='{spec}'", "point ENTED_WEIGHTS at a weights .json or unset it"
    else:
        label, fix = f"weights '{spec}'", "pass --weights PATH or set ENTED_WEIGHTS"
    path = Path(spec).expanduser()
    if spec.startswith("hf://"):
        return _resolve_hf(spec, download, origin)
    if path.is_dir():
        return _from_folder(path, origin)
    if path.is_file() and path.suffix in (".json", ".safetensors"):
        return (_from_manifest if path.suffix == ".json" else _from_bare)(path, origin)
    if path.is_file():
        raise WeightsError(f"{label} is neither a .json manifest nor a .safetensors file; {fix}")
    if not NAME_RE.match(spec) or path.suffix in (".json", ".safetensors"):
        raise WeightsError(f"{label} not found; {fix}")
    dirs = weights_dirs(weights_dir)
    if found := next(filter(None, (_find_in_dir(folder, spec) for folder in dirs)), None):
        return _from_manifest(found, origin)
    raise WeightsError(f"{label} not found (no {spec}.json in {_quoted(dirs)}); {fix}")


def _find_in_dir(folder: Path, name: str) -> Path | None:
    paths = (folder / f"{name}.json", folder / name / f"{name}.json")
    return next((path for path in paths if path.is_file()), None)


def _manifests_in(folder: Path) -> list[Path]:
    """The ented manifests directly in ``folder`` (other .json files are skipped)."""

    def is_manifest(path: Path) -> bool:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(data, dict) and str(data.get("format", "")).startswith("ented-weights/")

    return [p for p in sorted(folder.glob("*.json")) if is_manifest(p)] if folder.is_dir() else []


def _only_manifest(folder: Path) -> Path | None:
    manifests = _manifests_in(folder)
    return manifests[0] if len(manifests) == 1 else None


def _from_folder(folder: Path, origin: str) -> WeightSet:
    manifests = _manifests_in(folder)
    default = [p for p in manifests if p.name == f"{DEFAULT_NAME}.json"]
    if len(manifests) == 1 or default:
        return _from_manifest((default or manifests)[0], origin)
    if manifests:
        raise WeightsError(
            f"folder '{folder}' holds several weight sets ({', '.join(p.name for p in manifests)})"
            "; pass one .json file to --weights"
        )
    # No manifest: accept a folder that holds the shards of exactly one set (or one plain file).
    files = sorted(folder.glob("*.safetensors"))
    if len({(m["name"] if (m := SHARD_NAME_RE.match(p.name)) else p.stem) for p in files}) == 1:
        return _from_bare(files[0], origin)
    raise WeightsError(
        f"folder '{folder}' holds no ented weights manifest (*.json); pass a .json or "
        ".safetensors file to --weights"
    )


def _from_manifest(path: Path, origin: str) -> WeightSet:
    info = _read_manifest(path)
    shards = [path.parent / entry["file"] for entry in info["shards"]]
    return WeightSet(
        str(info.get("name") or path.stem), path, shards, info.get("config") or {}, info, origin
    )


def _read_manifest(path: Path) -> dict:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise WeightsError(f"weights manifest '{path}' cannot be read ({first_line(exc)})") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(
            f"weights manifest '{path}' is not valid JSON ({first_line(exc)}); re-download it"
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


def _sibling_names(shard_name: str) -> list[str]:
    """Every shard of the set ``shard_name`` belongs to (itself alone when not numbered)."""
    if not (match := SHARD_NAME_RE.match(shard_name)):
        return [shard_name]
    count = int(match["count"])
    return [f"{match['name']}-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def _from_bare(path: Path, origin: str) -> WeightSet:
    """A .safetensors file given alone: name and config come from its metadata.

    A shard of a multi-shard set brings its siblings (same name, same count) along, so the state
    dict is complete; there is no sha256 to check without the manifest.
    """
    meta = read_metadata(path)
    try:
        config = json.loads(meta.get("ented_config") or "{}")
    except json.JSONDecodeError as exc:
        raise WeightsError(
            f"'{path}' carries unreadable ented_config metadata; re-export it"
        ) from exc
    siblings = [path.with_name(n) for n in _sibling_names(path.name)]
    for sibling in siblings:
        if not sibling.is_file():
            raise WeightsError(
                f"shard '{sibling}' (part of '{path.name}') is missing; put all "
                f"{len(siblings)} shards in one folder or pass the .json manifest"
            )
    match = SHARD_NAME_RE.match(path.name)
    name = str(meta.get("ented_name") or (match["name"] if match else path.stem))
    return WeightSet(name, None, siblings, config if isinstance(config, dict) else {}, meta, origin)


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
    """The set from one snapshot of the repo: from the Hugging Face cache only, unless
    ``download`` (then huggingface_hub fetches what the cache lacks)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision, filename = parse_hf_spec(spec)
    if not filename.endswith((".json", ".safetensors")):
        raise WeightsError(
            f"weights '{spec}' must name a .json manifest or a .safetensors file in the repository"
        )
    env = os.environ
    if not download:
        offline_fix = "add --download to fetch it"
    elif _is_true(env.get("HF_HUB_OFFLINE") or env.get("TRANSFORMERS_OFFLINE")):
        offline_fix = "unset HF_HUB_OFFLINE to download it"
    else:
        offline_fix = None
    folder, base = posixpath.split(filename)
    stem = m["name"] if (m := SHARD_NAME_RE.match(base)) else base.rsplit(".", 1)[0]
    # The file asked for and every shard named after it (exports name shards after the manifest).
    patterns = [
        glob.escape(filename),
        glob.escape(posixpath.join(folder, stem)) + "-*-of-*.safetensors",
    ]
    # huggingface_hub reads its cache variables once, at import: read them now.
    cache = env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE")
    cache = cache or (env.get("HF_HOME") and os.path.join(env["HF_HOME"], "hub"))

    def what(file: str) -> str:
        return f"weights '{spec}'" if spec.endswith(file) else f"'{file}' of '{spec}'"

    try:
        snapshot = snapshot_download(
            repo_id,
            revision=revision,
            cache_dir=os.path.expanduser(cache) if cache else None,
            allow_patterns=patterns,
            local_files_only=offline_fix is not None,
        )
    except LocalEntryNotFoundError as exc:
        fix = offline_fix or "the Hub could not be reached; check your network"
        raise WeightsError(f"{what(filename)} not in the Hugging Face cache; {fix}") from exc
    except RevisionNotFoundError as exc:
        raise WeightsError(f"revision '{revision}' of '{repo_id}' not found on the Hub") from exc
    except RepositoryNotFoundError as exc:
        raise WeightsError(
            f"repository '{repo_id}' not found on the Hugging Face Hub (if private, run "
            "`hf auth login`); fix the hf:// spec"
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsError(
            f"{what(filename)} could not be downloaded ({first_line(exc)}); check your network"
        ) from exc
    except ValueError as exc:  # a malformed repo id or file name
        raise WeightsError(
            f"'{spec}' is not a valid Hugging Face spec ({first_line(exc)})"
        ) from exc
    path = Path(snapshot) / filename
    names = _sibling_names(base)
    if path.suffix == ".json" and path.is_file():
        names = [entry["file"] for entry in _read_manifest(path)["shards"]]
    lacking = [f for f in [base, *names] if not (path.parent / f).is_file()]
    if lacking:
        missing = what(posixpath.join(folder, lacking[0]))
        if offline_fix:
            raise WeightsError(f"{missing} not in the Hugging Face cache; {offline_fix}")
        # (huggingface_hub falls back on the cache when the Hub cannot be reached)
        raise WeightsError(
            f"{missing} not found in '{repo_id}' on the Hub (or the Hub could not be reached); "
            "fix the path or check your network"
        )
    origin = f"{origin} (Hugging Face {repo_id})"
    return _from_manifest(path, origin) if path.suffix == ".json" else _from_bare(path, origin)


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _quoted(paths: list[Path]) -> str:
    return ", ".join(f"'{p}'" for p in paths)
