"""The weights store: real safetensors files, real manifests, a real Hugging Face cache layout."""

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from ented_cli.errors import WeightsError
from ented_cli.model.weight_lookup import list_weight_sets, resolve_weights
from ented_cli.model.weights import (
    DEFAULT_NAME,
    load_state_dict,
    save_weight_set,
    verify_weight_set,
)

MiB = 2**20
REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    # The developer's own settings must not change what these tests resolve.
    for var in ("ENTED_WEIGHTS", "ENTED_WEIGHTS_DIR", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(var, raising=False)


def small_state(seed: int = 0, dtype=torch.float16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "enc.conv.weight": torch.randn(32, 3, 3, 3, generator=g).to(dtype),
        "enc.conv.bias": torch.randn(32, generator=g).to(dtype),
        "vq.codebook": torch.randn(64, 16, generator=g).to(dtype),
        "vq.usage": torch.arange(64, dtype=torch.int64),
        "dec.mask": torch.rand(8, generator=g) > 0.5,
    }


def save_small(folder: Path, name: str, marker: str, seed: int = 0) -> Path:
    return save_weight_set(small_state(seed), folder, name, {"marker": marker, "size": 256})


def age(paths) -> None:
    """Make files look written a minute ago, as a cache keyed on file times would trust them."""
    past = time.time() - 60
    for p in paths:
        os.utime(p, (past, past))


def flip_byte(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


# ------------------------------------------------------------------------------ save and load


def test_round_trip_is_bit_exact_for_fp16_and_keeps_int_and_bool_tensors(tmp_path):
    state = small_state()
    manifest = save_weight_set(
        state, tmp_path, "tiny", {"size": 256, "enc": [32, 64]}, extra={"steps": 1200}
    )
    ws = resolve_weights(manifest)
    loaded = load_state_dict(ws)

    assert set(loaded) == set(state)
    for key, tensor in state.items():
        assert loaded[key].dtype == tensor.dtype
        assert torch.equal(loaded[key], tensor), key
    assert ws.config == {"size": 256, "enc": [32, 64]}
    assert ws.info["extra"] == {"steps": 1200}
    assert ws.info["format"] == "ented-weights/1" and ws.info["dtype"] == "float16"
    assert ws.architecture == "ented-256"
    entry = ws.info["shards"][0]
    shard = tmp_path / entry["file"]
    assert entry["file"] == "tiny-00001-of-00001.safetensors"
    assert entry["bytes"] == shard.stat().st_size
    assert entry["sha256"] == hashlib.sha256(shard.read_bytes()).hexdigest()


def test_fp32_weights_are_stored_as_their_half_precision_values(tmp_path):
    state = small_state(seed=3, dtype=torch.float32)
    ws = resolve_weights(save_weight_set(state, tmp_path, "fp32", {}))
    loaded = load_state_dict(ws)
    assert loaded["enc.conv.weight"].dtype == torch.float16
    assert torch.equal(loaded["enc.conv.weight"], state["enc.conv.weight"].half())
    # Asking for fp32 at load time gives fp32 without touching integer tensors.
    as_fp32 = load_state_dict(ws, dtype=torch.float32)
    assert as_fp32["vq.codebook"].dtype == torch.float32
    assert as_fp32["vq.usage"].dtype == torch.int64


def test_saving_a_value_that_overflows_fp16_is_refused(tmp_path):
    state = {"w": torch.tensor([1.0, 1e6])}
    with pytest.raises(WeightsError, match="'w'.*too large"):
        save_weight_set(state, tmp_path, "big", {})
    assert not list(tmp_path.glob("*.json"))


def test_about_40_mib_is_split_into_at_least_3_shards_of_at_most_16_mib(tmp_path):
    g = torch.Generator().manual_seed(1)
    state = {f"block{i}.weight": torch.randn(1024, 1024, generator=g).half() for i in range(20)}
    manifest = save_weight_set(state, tmp_path, "big", {"size": 256})

    ws = resolve_weights(manifest)
    assert len(ws.shards) >= 3
    names = [p.name for p in ws.shards]
    assert names[0] == f"big-00001-of-{len(names):05d}.safetensors"
    for path in ws.shards:
        assert path.stat().st_size <= 16 * MiB
        with safe_open(path, framework="pt") as f:
            meta = f.metadata()
        assert meta["ented_format"] == "ented-weights/1" and meta["ented_name"] == "big"
        assert json.loads(meta["ented_config"]) == {"size": 256}
    loaded = load_state_dict(ws)
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_saving_again_with_fewer_shards_removes_the_old_ones(tmp_path):
    big = {f"t{i}": torch.zeros(512, 1024, dtype=torch.float16) for i in range(4)}  # 4 MiB
    save_weight_set(big, tmp_path, "net", {}, max_shard_bytes=2 * MiB)
    assert len(list(tmp_path.glob("net-*.safetensors"))) == 4
    save_weight_set(small_state(), tmp_path, "net", {}, max_shard_bytes=2 * MiB)
    assert [p.name for p in tmp_path.glob("net-*.safetensors")] == [
        "net-00001-of-00001.safetensors"
    ]
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind


# ------------------------------------------------------------------------------- damaged files


def test_a_flipped_byte_is_reported_as_a_sha256_mismatch(tmp_path):
    ws = resolve_weights(save_small(tmp_path, "net", "a"))
    assert verify_weight_set(ws) == []
    shard = ws.shards[0]
    flip_byte(shard, shard.stat().st_size - 10)  # inside the tensor data: the header stays valid

    problems = verify_weight_set(ws)
    assert len(problems) == 1 and shard.name in problems[0] and "sha256" in problems[0]
    with pytest.raises(WeightsError, match="sha256") as err:
        load_state_dict(ws)
    assert "\n" not in str(err.value)
    # Without verification the damage goes unnoticed, which is why verify is the default.
    assert load_state_dict(ws, verify=False).keys() == small_state().keys()


def test_a_shard_changed_after_it_was_verified_is_caught_again(tmp_path):
    ws = resolve_weights(save_small(tmp_path, "net", "a"))
    age(ws.shards)
    assert verify_weight_set(ws) == []  # hashed and remembered
    flip_byte(ws.shards[0], ws.shards[0].stat().st_size - 1)
    assert "sha256" in " ".join(verify_weight_set(ws))


def test_a_deleted_shard_gives_an_error_naming_the_file(tmp_path):
    big = {f"t{i}": torch.ones(512, 1024, dtype=torch.float16) for i in range(3)}
    ws = resolve_weights(save_weight_set(big, tmp_path, "net", {}, max_shard_bytes=2 * MiB))
    ws.shards[1].unlink()
    assert any(
        "net-00002-of-00003.safetensors" in p and "missing" in p for p in verify_weight_set(ws)
    )
    with pytest.raises(WeightsError, match="net-00002-of-00003.safetensors.*missing"):
        load_state_dict(ws)
    with pytest.raises(WeightsError, match="net-00002-of-00003.safetensors.*missing"):
        load_state_dict(ws, verify=False)


def test_a_truncated_shard_is_reported_as_truncated(tmp_path):
    ws = resolve_weights(save_small(tmp_path, "net", "a"))
    data = ws.shards[0].read_bytes()
    ws.shards[0].write_bytes(data[:-100])
    with pytest.raises(WeightsError, match="truncated"):
        load_state_dict(ws)
    # A truncated bare file (no manifest to compare with) is caught from its header.
    with pytest.raises(WeightsError, match="truncated"):
        resolve_weights(ws.shards[0])


def test_a_git_lfs_pointer_instead_of_weights_says_to_pull(tmp_path):
    ws = resolve_weights(save_small(tmp_path, "net", "a"))
    ws.shards[0].write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 9\n")
    with pytest.raises(WeightsError, match="git lfs pull"):
        load_state_dict(ws)


def test_a_manifest_listing_no_shards_is_rejected(tmp_path):
    manifest = save_small(tmp_path, "net", "a")
    info = json.loads(manifest.read_text())
    info["shards"] = []
    manifest.write_text(json.dumps(info))
    with pytest.raises(WeightsError, match="lists no shards"):
        resolve_weights(manifest)


def test_a_manifest_pointing_outside_its_folder_is_rejected(tmp_path):
    manifest = save_small(tmp_path / "set", "net", "a")
    info = json.loads(manifest.read_text())
    info["shards"][0]["file"] = "../elsewhere.safetensors"
    manifest.write_text(json.dumps(info))
    with pytest.raises(WeightsError, match="bad shard entry"):
        resolve_weights(manifest)


def test_a_json_file_that_is_not_a_manifest_is_rejected(tmp_path):
    other = tmp_path / "config.json"
    other.write_text('{"hello": 1}')
    with pytest.raises(WeightsError, match="not an ented weights manifest"):
        resolve_weights(other)


# ---------------------------------------------------------------------------------- resolving


def test_explicit_spec_beats_env_which_beats_weights_dir(tmp_path, monkeypatch):
    explicit = save_small(tmp_path / "explicit", "net", "explicit")
    from_env = save_small(tmp_path / "env", "net", "env")
    wdir = tmp_path / "weights"
    save_small(wdir, DEFAULT_NAME, "dir")

    assert resolve_weights(weights_dir=wdir).config["marker"] == "dir"
    monkeypatch.setenv("ENTED_WEIGHTS", str(from_env))
    assert resolve_weights(weights_dir=wdir).config["marker"] == "env"
    ws = resolve_weights(str(explicit), weights_dir=wdir)
    assert ws.config["marker"] == "explicit" and ws.manifest == explicit


def test_a_missing_explicit_spec_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    wdir = tmp_path / "weights"
    save_small(wdir, DEFAULT_NAME, "dir")
    with pytest.raises(WeightsError, match=r"'nope\.json' not found.*--weights PATH"):
        resolve_weights("nope.json", weights_dir=wdir)
    monkeypatch.setenv("ENTED_WEIGHTS", str(tmp_path / "gone.json"))
    with pytest.raises(WeightsError, match="ENTED_WEIGHTS=.*gone.json.*not found"):
        resolve_weights(weights_dir=wdir)


def test_weights_dir_env_is_searched_for_the_default_and_for_names(tmp_path, monkeypatch):
    wdir = tmp_path / "mine"
    save_small(wdir, DEFAULT_NAME, "default")
    save_small(wdir / "ented-256", "ented-256", "release")  # a set in its own subfolder
    monkeypatch.setenv("ENTED_WEIGHTS_DIR", str(wdir))
    assert resolve_weights().config["marker"] == "default"
    assert resolve_weights("ented-256").config["marker"] == "release"
    assert {ws.name for ws in list_weight_sets()} >= {DEFAULT_NAME, "ented-256"}


def test_no_weights_anywhere_says_how_to_get_some(tmp_path):
    with pytest.raises(WeightsError, match="no ented weights found.*--weights PATH.*--download"):
        resolve_weights(weights_dir=tmp_path)


def test_a_registered_name_is_found_in_the_weights_dir(tmp_path):
    save_small(tmp_path, "ented-256-preview", "p")
    save_small(tmp_path, "other", "o")
    assert resolve_weights("other", weights_dir=tmp_path).config["marker"] == "o"
    with pytest.raises(WeightsError, match="'missing' not found.*missing.json"):
        resolve_weights("missing", weights_dir=tmp_path)


def test_a_folder_spec_uses_its_only_manifest_or_the_default_name(tmp_path):
    one = tmp_path / "one"
    save_small(one, "solo", "solo")
    assert resolve_weights(one).name == "solo"

    two = tmp_path / "two"
    save_small(two, "aaa", "a")
    save_small(two, DEFAULT_NAME, "default")
    assert resolve_weights(two).config["marker"] == "default"

    ambiguous = tmp_path / "ambiguous"
    save_small(ambiguous, "aaa", "a")
    save_small(ambiguous, "bbb", "b")
    with pytest.raises(WeightsError, match="several weight sets.*aaa.json, bbb.json"):
        resolve_weights(ambiguous)


def test_a_bare_safetensors_file_describes_itself(tmp_path):
    manifest = save_small(tmp_path, "net", "bare")
    shard = tmp_path / "net-00001-of-00001.safetensors"
    manifest.unlink()  # prove nothing comes from the manifest
    ws = resolve_weights(str(shard))
    assert ws.manifest is None and ws.name == "net"
    assert ws.config == {"marker": "bare", "size": 256}
    assert ws.architecture == "ented-256"
    assert torch.equal(load_state_dict(ws)["vq.codebook"], small_state()["vq.codebook"])


def test_one_shard_of_many_brings_its_siblings(tmp_path):
    big = {f"t{i}": torch.full((512, 1024), float(i), dtype=torch.float16) for i in range(3)}
    save_weight_set(big, tmp_path, "net", {"marker": "m"}, max_shard_bytes=2 * MiB)
    ws = resolve_weights(tmp_path / "net-00002-of-00003.safetensors")
    assert len(ws.shards) == 3 and set(load_state_dict(ws)) == set(big)
    (tmp_path / "net-00003-of-00003.safetensors").unlink()
    with pytest.raises(WeightsError, match="net-00003-of-00003.safetensors.*missing"):
        resolve_weights(tmp_path / "net-00001-of-00003.safetensors")


def test_list_skips_json_files_that_are_not_weight_sets(tmp_path):
    save_small(tmp_path, "a", "a")
    save_small(tmp_path / "sub", "b", "b")
    (tmp_path / "notes.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{not json")
    assert [ws.name for ws in list_weight_sets(tmp_path)] == ["a", "b"]


def test_importing_the_module_does_not_import_torch():
    code = "import sys, ented_cli.model.weights; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ------------------------------------------------------------------------ Hugging Face cache


def put_in_hf_cache(cache: Path, repo_id: str, files: dict[str, Path]) -> Path:
    """Lay files out as huggingface_hub does: blobs/<sha256>, snapshots/<rev>/<path> → blob."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REV)
    for rel, src in files.items():
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / REV / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no test here may touch the network
    return cache


def test_an_hf_spec_is_found_in_the_cache_without_downloading(tmp_path, hf_cache):
    src = tmp_path / "export"
    big = {f"t{i}": torch.full((512, 1024), float(i), dtype=torch.float16) for i in range(3)}
    save_weight_set(big, src, DEFAULT_NAME, {"marker": "hf"}, max_shard_bytes=2 * MiB)
    put_in_hf_cache(hf_cache, "someone/ented", {f"v1/{p.name}": p for p in sorted(src.iterdir())})

    ws = resolve_weights(f"hf://someone/ented/v1/{DEFAULT_NAME}.json", download=False)
    assert ws.config["marker"] == "hf" and len(ws.shards) == 3
    assert all(REV in str(p) for p in ws.shards)
    assert verify_weight_set(ws) == []
    assert torch.equal(load_state_dict(ws)["t2"], big["t2"])

    # A single shard by hf:// brings its siblings; the same works through ENTED_WEIGHTS.
    bare = resolve_weights(f"hf://someone/ented/v1/{DEFAULT_NAME}-00001-of-00003.safetensors")
    assert bare.manifest is None and set(load_state_dict(bare)) == set(big)


def test_an_hf_spec_without_a_file_means_the_default_manifest(tmp_path, hf_cache, monkeypatch):
    src = tmp_path / "export"
    save_small(src, DEFAULT_NAME, "root")
    put_in_hf_cache(hf_cache, "someone/ented", {p.name: p for p in src.iterdir()})
    monkeypatch.setenv("ENTED_WEIGHTS", "hf://someone/ented")
    assert resolve_weights().config["marker"] == "root"


def test_an_hf_spec_missing_from_the_cache_asks_for_download(hf_cache):
    with pytest.raises(
        WeightsError,
        match=r"hf://nobody/none/x\.json.*not in the Hugging Face "
        r"cache; add --download",
    ):
        resolve_weights("hf://nobody/none/x.json", download=False)
    with pytest.raises(WeightsError, match="unset HF_HUB_OFFLINE"):
        resolve_weights("hf://nobody/none/x.json", download=True)


def test_an_hf_manifest_whose_shard_is_not_cached_names_the_shard(tmp_path, hf_cache):
    src = tmp_path / "export"
    save_small(src, "net", "x")
    put_in_hf_cache(hf_cache, "someone/ented", {"net.json": src / "net.json"})
    with pytest.raises(WeightsError, match="net-00001-of-00001.safetensors.*add --download"):
        resolve_weights("hf://someone/ented/net.json")
