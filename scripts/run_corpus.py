#!/usr/bin/env python3
"""Run `ented restore` over the odd-input corpus and count what matters (issue 6, part 2).

    python scripts/make_odd_corpus.py --out /tmp/odd-corpus
    python scripts/run_corpus.py /tmp/odd-corpus --big --sigint --figures figures.json

One `ented restore inputs/ -R -o outputs/ --json` over the whole corpus, then:
- every input is accounted for: an output file (JSON report) or an `ented: error:` line naming
  it (the same file reached through a symlink counts once);
- crashes: a traceback on stderr, or an exit code other than 3;
- inputs modified: sha256 (or link target, for symlinks) before and after;
- leftovers: temporary files (`.*.tmp`) anywhere, and outputs that do not decode;
- surprises: inputs the manifest expects to fail that were written, or the other way round;
- kept: alpha, ICC, EXIF, upright orientation and 16-bit depth in the outputs of the inputs that
  had them;
- peak RSS of the ented process (from wait4), and wall time.
--big also restores the 12000x9000 photo alone with the pixel limit lifted (peak RSS);
--sigint starts the batch again, sends SIGINT once the first output appears, and checks exit
code 130, no temporary or partial files, unchanged inputs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

ENTED = [sys.executable, "-m", "ented_cli", "restore"]
BIG_PHOTO = "big_photo/real_photo_12000x9000.jpg"
OBSTACLES = ("unwritable_output", "readonly_output")  # made by make_odd_corpus in outputs/


# ---------------------------------------------------------------------------------------------
# Running ented
# ---------------------------------------------------------------------------------------------


def run_ented(args: list[str], log_dir: Path, name: str) -> dict:
    """Run ented with stdout/stderr to files; return exit code, wall time, peak RSS, logs."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    env = dict(os.environ, NO_COLOR="1")
    t0 = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([*ENTED, *args], stdout=out, stderr=err, env=env)
        peak = wait_with_peak_rss(proc)
    return {
        "exit_code": proc.returncode,
        "wall_s": round(time.perf_counter() - t0, 1),
        "peak_rss_mib": peak,
        "stdout": out_path.read_text(errors="replace"),
        "stderr": err_path.read_text(errors="replace"),
    }


def wait_with_peak_rss(proc: subprocess.Popen, every_s: float = 0.02) -> float | None:
    """Wait for `proc`; return its peak resident memory in MiB (Linux: VmHWM, polled).

    Not wait4's ru_maxrss: on Linux it includes the parent's memory at fork time (vfork shares
    it until exec), so a big parent (pytest with torch loaded) would inflate the figure.
    """
    status, peak = Path(f"/proc/{proc.pid}/status"), None
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = round(int(line.split()[1]) / 1024, 1)  # kB -> MiB
        except (OSError, ValueError):  # exiting, or not Linux
            pass
        time.sleep(every_s)
    return peak


def reset_outputs(outputs: Path) -> None:
    """Empty the output folder, keeping the obstacles the corpus generator put there."""
    outputs.mkdir(parents=True, exist_ok=True)
    for entry in outputs.iterdir():
        if entry.name in OBSTACLES:
            if entry.is_dir():
                entry.chmod(0o755)
                for child in entry.iterdir():
                    _remove(child)
                entry.chmod(0o555)
            continue
        _remove(entry)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


# ---------------------------------------------------------------------------------------------
# Inputs before/after
# ---------------------------------------------------------------------------------------------


def fingerprint(inputs: Path) -> dict[str, str]:
    """What each entry under `inputs` is: sha256 of regular files, the target of symlinks, the
    type of anything else (a FIFO is never opened). Unreadable files get their size and mtime."""
    prints: dict[str, str] = {}
    for root, dirs, files in os.walk(inputs):
        for name in dirs + files:
            path = Path(root) / name
            rel = os.fsdecode(path.relative_to(inputs))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                prints[rel] = "link:" + os.readlink(path)
            elif stat.S_ISREG(st.st_mode):
                prints[rel] = _sha256(path, st)
            elif stat.S_ISDIR(st.st_mode):
                prints[rel] = f"dir:{stat.S_IMODE(st.st_mode):o}"
            else:
                prints[rel] = f"special:{stat.S_IFMT(st.st_mode):o}"
    return prints


def _sha256(path: Path, st: os.stat_result) -> str:
    try:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except PermissionError:  # chmod 000 for a non-root user
        return f"unreadable:{st.st_size}:{st.st_mtime_ns}:{stat.S_IMODE(st.st_mode):o}"


def leftovers(*folders: Path) -> list[str]:
    """Temporary files left behind (write_atomic's are hidden `.name.<random>.tmp`)."""
    found = []
    for folder in folders:
        for root, _, files in os.walk(folder):
            found += [os.path.join(root, f) for f in files if f.endswith((".tmp", ".part"))]
    return found


def broken_outputs(outputs: Path) -> list[str]:
    """Output files that do not decode completely (a partial write would show up here)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    bad = []
    for root, _, files in os.walk(outputs):
        for f in files:
            path = Path(root) / f
            if path == outputs / "unwritable_output" or not path.is_file():
                continue  # the obstacle file, not an output
            try:
                with Image.open(path) as im:
                    im.load()
            except Exception as exc:
                bad.append(f"{path}: {exc}")
    return bad


# ---------------------------------------------------------------------------------------------
# Accounting for every input
# ---------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    from ented_cli.cli.messages import one_line

    return one_line(text)


def account(corpus: Path, run: dict) -> dict:
    """Match manifest inputs with JSON reports and stderr error lines."""
    manifest = json.loads((corpus / "manifest.json").read_text())["inputs"]
    inputs = corpus / "inputs"
    reports = {}
    for line in run["stdout"].splitlines():
        if line.strip():
            rec = json.loads(line)
            reports[rec["input"]] = rec
    stderr_lines = run["stderr"].splitlines()
    errors = [ln for ln in stderr_lines if ln.startswith("ented: error: ")]
    stray = [ln for ln in stderr_lines if not ln.startswith("ented: ")]

    def outcome(display: str) -> str | None:
        rec = reports.get(display)
        if rec and rec["status"] != "error" and rec["output"] and os.path.exists(rec["output"]):
            return "output"
        shown = _one_line(display)
        if any(ln.startswith(f"ented: error: {shown}: ") for ln in errors):
            return "error"
        return None

    groups: dict[str, list[dict]] = {}
    for rec in manifest:
        path = inputs / rec["path"]
        groups.setdefault(os.path.realpath(path), []).append(rec)

    missing, surprises, results = [], [], {}
    for group in groups.values():
        outcomes = {rec["path"]: outcome(str(inputs / rec["path"])) for rec in group}
        got = next((o for o in outcomes.values() if o), None)
        for rec in group:
            results[rec["path"]] = got
            if got is None:
                missing.append(rec["path"])
            elif rec["expect"] != "any" and got != rec["expect"]:
                surprises.append(f"{rec['path']}: expected {rec['expect']}, got {got}")
    kept = check_kept(manifest, inputs, reports, results)
    return {
        "inputs": len(manifest),
        "outputs": sum(r == "output" for r in results.values()),
        "errors": sum(r == "error" for r in results.values()),
        "unaccounted": missing,
        "surprises": surprises,
        "tracebacks": run["stderr"].count("Traceback"),
        "stray_stderr_lines": stray,
        "kept": kept,
    }


def check_kept(manifest: list[dict], inputs: Path, reports: dict, results: dict) -> dict:
    """For outputs of inputs with alpha / ICC / EXIF / orientation / 16 bits: were they kept?"""
    import cv2
    import numpy as np
    from PIL import Image, ImageOps

    checked = {"alpha": 0, "icc": 0, "exif": 0, "upright": 0, "bits16": 0}
    failures = []
    for rec in manifest:
        if results.get(rec["path"]) != "output":
            continue
        report = reports.get(str(inputs / rec["path"]))
        if report is None:  # reached through another name (symlink alias)
            continue
        out = Path(report["output"])
        with Image.open(out) as im:
            exif = im.getexif()
            shown = ImageOps.exif_transpose(im).size if exif.get(0x0112, 1) != 1 else im.size
            has_alpha = "A" in im.mode or "transparency" in im.info
            icc = im.info.get("icc_profile")
        with Image.open(inputs / rec["path"]) as src:
            src_icc = src.info.get("icc_profile")
        problems = []
        if rec.get("alpha"):
            checked["alpha"] += 1
            if not has_alpha and out.suffix.lower() not in (".jpg", ".jpeg", ".bmp"):
                problems.append("alpha lost")
        if rec.get("icc"):
            checked["icc"] += 1
            if icc != src_icc:
                problems.append("ICC profile lost")
        if rec.get("exif"):
            checked["exif"] += 1
            if exif.get(0x010F) != "ented-corpus":
                problems.append("EXIF lost")
        if rec.get("upright_size"):
            checked["upright"] += 1
            if list(shown) != rec["upright_size"]:
                problems.append(f"shown as {shown}, upright is {rec['upright_size']}")
        if rec.get("bits") == 16:
            checked["bits16"] += 1
            arr = cv2.imdecode(np.fromfile(out, np.uint8), cv2.IMREAD_UNCHANGED)
            if arr is None or arr.dtype != np.uint16:
                problems.append("16-bit depth lost")
        failures += [f"{rec['path']}: {p}" for p in problems]
    return {"checked": checked, "failures": failures}


# ---------------------------------------------------------------------------------------------
# The three runs
# ---------------------------------------------------------------------------------------------


def corpus_run(corpus: Path, extra: list[str], logs: Path) -> dict:
    inputs, outputs = corpus / "inputs", corpus / "outputs"
    reset_outputs(outputs)
    before = fingerprint(inputs)
    run = run_ented([str(inputs), "-R", "-o", str(outputs), "--json", *extra], logs, "corpus")
    after = fingerprint(inputs)
    figures = account(corpus, run)
    figures.update(
        exit_code=run["exit_code"],
        crashes=figures["tracebacks"] + (run["exit_code"] != 3),
        modified_inputs=sorted(
            k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
        ),
        leftovers=leftovers(inputs, outputs),
        broken_outputs=broken_outputs(outputs),
        wall_s=run["wall_s"],
        peak_rss_mib=run["peak_rss_mib"],
    )
    return figures


def big_run(corpus: Path, logs: Path, max_pixels: str = "0") -> dict:
    """The 12000x9000 photo alone, with the pixel limit lifted: peak memory and time."""
    photo = corpus / "inputs" / BIG_PHOTO
    out = corpus / "big-output"
    if out.exists():
        shutil.rmtree(out)
    before = fingerprint(photo.parent)
    run = run_ented(
        [str(photo), "-o", f"{out}/", "--max-pixels", max_pixels, "--json"], logs, "big"
    )
    report = json.loads(run["stdout"].splitlines()[-1]) if run["stdout"].strip() else {}
    return {
        "exit_code": run["exit_code"],
        "status": report.get("status"),
        "faces": len(report.get("faces", [])),
        "timing_ms": report.get("timing_ms"),
        "wall_s": run["wall_s"],
        "peak_rss_mib": run["peak_rss_mib"],
        "modified_inputs": before != fingerprint(photo.parent),
        "leftovers": leftovers(out),
        "tracebacks": run["stderr"].count("Traceback"),
    }


def sigint_run(corpus: Path, logs: Path, after_outputs: int = 1, timeout: float = 300) -> dict:
    """Start the batch, send SIGINT once `after_outputs` outputs exist, check what is left."""
    inputs = corpus / "inputs"
    out = corpus / "sigint-output"
    if out.exists():
        shutil.rmtree(out)
    before = fingerprint(inputs)
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, NO_COLOR="1")
    with open(logs / "sigint.stderr", "wb") as err:
        # A background job (`cmd &` in a script, nohup) inherits SIGINT ignored, and Python
        # then keeps ignoring it: give ented the default handling a terminal would.
        proc = subprocess.Popen(
            [*ENTED, str(inputs), "-R", "-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=env,
            preexec_fn=_default_sigint,
        )
        deadline = time.monotonic() + timeout
        seen = 0
        while proc.poll() is None and time.monotonic() < deadline:
            seen = _count_outputs(out)
            if seen >= after_outputs:
                break
            time.sleep(0.05)
        interrupted_at = _count_outputs(out)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
    stderr = (logs / "sigint.stderr").read_text(errors="replace")
    return {
        "exit_code": code,
        "outputs_when_interrupted": interrupted_at,
        "outputs_kept": _count_outputs(out),
        "leftovers": leftovers(inputs, out),
        "broken_outputs": broken_outputs(out) if out.exists() else [],
        "modified_inputs": sorted(k for k, v in fingerprint(inputs).items() if before.get(k) != v),
        "tracebacks": stderr.count("Traceback"),
        "last_stderr_line": stderr.strip().splitlines()[-1] if stderr.strip() else "",
    }


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _count_outputs(folder: Path) -> int:
    if not folder.exists():
        return 0
    return sum(not f.startswith(".") for _, _, files in os.walk(folder) for f in files)


# ---------------------------------------------------------------------------------------------


def summary(figures: dict) -> str:
    c = figures["corpus"]
    lines = [
        f"inputs tried        {c['inputs']}",
        f"outputs written     {c['outputs']}",
        f"one-line errors     {c['errors']}",
        f"unaccounted         {len(c['unaccounted'])}",
        f"surprises           {len(c['surprises'])}",
        (
            f"crashes             {c['crashes']}  (tracebacks {c['tracebacks']}, exit code "
            f"{c['exit_code']})"
        ),
        f"modified inputs     {len(c['modified_inputs'])}",
        (
            f"leftovers           {len(c['leftovers'])} temp files, "
            f"{len(c['broken_outputs'])} broken outputs"
        ),
        f"kept                {c['kept']['checked']}, failures {len(c['kept']['failures'])}",
        f"wall time           {c['wall_s']} s, peak RSS {c['peak_rss_mib']} MiB",
    ]
    if "big" in figures:
        b = figures["big"]
        lines.append(
            f"12000x9000 photo    exit {b['exit_code']}, {b['status']}, "
            f"{b['wall_s']} s, peak RSS {b['peak_rss_mib']} MiB"
        )
    if "sigint" in figures:
        s = figures["sigint"]
        lines.append(
            f"SIGINT mid-batch    exit {s['exit_code']}, {s['outputs_kept']} outputs "
            f"kept, {len(s['leftovers'])} temp files, {len(s['broken_outputs'])} "
            f"broken, {len(s['modified_inputs'])} inputs modified"
        )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("corpus", type=Path, help="folder made by scripts/make_odd_corpus.py")
    ap.add_argument("--big", action="store_true", help="also restore the 12000x9000 photo alone")
    ap.add_argument("--sigint", action="store_true", help="also interrupt a batch with SIGINT")
    ap.add_argument("--figures", type=Path, help="write the figures as JSON here")
    ap.add_argument("extra", nargs="*", help="extra `ented restore` options (after --)")
    args = ap.parse_args()
    logs = args.corpus / "logs"
    figures = {"corpus": corpus_run(args.corpus, args.extra, logs)}
    if args.big and (args.corpus / "inputs" / BIG_PHOTO).exists():
        figures["big"] = big_run(args.corpus, logs)
    if args.sigint:
        figures["sigint"] = sigint_run(args.corpus, logs)
    if args.figures:
        args.figures.write_text(json.dumps(figures, indent=1))
    print(summary(figures))
    c = figures["corpus"]
    bad = (
        c["crashes"]
        or c["modified_inputs"]
        or c["leftovers"]
        or c["unaccounted"]
        or c["broken_outputs"]
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
