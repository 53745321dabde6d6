"""`ented bench` results as plain-text tables (stdout) and as JSON (--json FILE)."""

from __future__ import annotations

import json
from pathlib import Path

from ented_cli.errors import EntedError
from ented_cli.imaging.atomic import write_atomic


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the first column left-aligned, the rest right."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows)]

    def line(cells: list[str]) -> str:
        out = [
            str(c).ljust(w) if i == 0 else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


def generator_table(rows: list[dict]) -> str:
    body = [
        [
            r["mode"],
            str(r["batch_size"]),
            _num(r["faces_per_s"], 2),
            _num(r["ms_per_face"]),
            _num(r["latency_ms"]),
            _ratio(r.get("speedup_vs_batch1")),
            _num(r["peak_rss_mib"], 0),
            _num(r["peak_gpu_mib"], 0),
            str(r["runs"]) + (" (out of memory)" if "error" in r else ""),
        ]
        for r in rows
    ]
    headers = [
        "mode",
        "batch",
        "faces/s",
        "ms/face",
        "latency ms",
        "vs batch 1",
        "peak RSS MiB",
        "peak GPU MiB",
        "runs",
    ]
    return table(headers, body)


def pipeline_table(rows: list[dict]) -> str:
    body = [
        [
            r["pipeline"],
            _num(r["images_per_s"], 2),
            _num(r["faces_per_s"], 2),
            _num(r["ms_per_image"]),
            _num(r["latency_ms"]),
            _ratio(r.get("speedup_vs_sequential")),
            _num(r["peak_rss_mib"], 0),
            _num(r["peak_gpu_mib"], 0),
            f"{r['slowest_stage']} ({r['slowest_share']:.0%})",
        ]
        for r in rows
    ]
    headers = [
        "pipeline",
        "images/s",
        "faces/s",
        "ms/image",
        "latency ms",
        "vs sequential",
        "peak RSS MiB",
        "peak GPU MiB",
        "slowest stage",
    ]
    return table(headers, body)


def stage_table(rows: list[dict]) -> str:
    """One column per pipeline setting: summed ms of each stage and its share."""
    stages = list(rows[0]["stages"])
    body = [
        [stage]
        + [f"{r['stages'][stage]['ms']:,.0f} ms {r['stages'][stage]['share']:>4.0%}" for r in rows]
        for stage in stages
    ]
    return table(["stage"] + [r["pipeline"] for r in rows], body)


def video_table(rows: list[dict]) -> str:
    """Frames/s, ms per frame by stage, flicker (input -> output) and memory per setting."""
    stages = list(rows[0]["ms_per_frame"])
    body = []
    for r in rows:
        f = r["flicker"] or {}
        flicker = f"{f['input']:.2f} -> {f['output']:.2f}" if f else "-"
        ms = [_num(r["ms_per_frame"][s]) for s in stages]
        body.append(
            [
                r["setting"],
                _num(r["frames_per_s"], 2),
                _num(r.get("cpu_ms_per_frame"), 0),
                *ms,
                flicker,
                _num(r["peak_rss_mib"], 0),
            ]
        )
    headers = [
        "setting",
        "frames/s",
        "CPU ms/frame",
        *[f"{s} ms" for s in stages],
        "flicker in -> out",
        "peak RSS MiB",
    ]
    return table(headers, body)


def render(result: dict) -> str:
    m, model = result["machine"], result["model"]
    weights = (
        f"{model['name']} (random weights: timings only)" if model["random_init"] else model["name"]
    )
    lines = [
        f"ented bench: {weights}, {model['params_m']} M parameters",
        (
            f"machine: {m['cpu']}, {m['cpu_cores_usable']} usable cores "
            f"(load {m['load_average_1m']}), torch {m['torch']}, "
            f"OMP_WAIT_POLICY={m.get('omp_wait_policy') or 'unset'}"
        ),
    ]
    for run in result["devices"]:
        lines.append("")
        threads = run.get("threads")
        if threads is not None:
            plural = "thread" if threads == 1 else "threads"
            threads = f", {threads} torch {plural} ({run.get('threads_source', 'torch')})"
        backend = run.get("backend", "torch")
        engine = "" if backend == "torch" else f", generator on {backend}"
        lines.append(
            f"== {run['device']} ({run['device_name']}), {run['dtype']}{threads or ''}{engine}"
        )
        if run.get("video"):
            v = run["video"]
            first = v["rows"][0]
            lines += [
                "",
                (
                    f"video ({v['clip']}; {first['frames']} frames of {first['width']}x"
                    f"{first['height']}, {first['faces']} faces restored; ms per frame by "
                    "stage, decode and encode on their own threads; flicker = mean luma change "
                    "of the aligned faces, 8-bit levels):"
                ),
                video_table(v["rows"]),
            ]
        if run.get("generator"):
            lines += [
                "",
                "generator alone (256x256 faces; latency = one batch):",
                generator_table(run["generator"]),
            ]
        if run.get("pipeline"):
            p = run["pipeline"]
            first = p[0]
            lines += [
                "",
                (
                    f"whole pipeline ({first['images']} images from "
                    f"{result['settings']['images']}, {first['faces']} faces, batch "
                    f"{first['batch_size']}; latency = read to written):"
                ),
                pipeline_table(p),
                "",
                "time per stage (summed over images; with workers stages overlap):",
                stage_table(p),
            ]
            errors = [r for r in p if r["errors"]]
            for r in errors:
                lines.append(
                    f"{r['pipeline']}: {r['errors']} image(s) failed, e.g. {r['first_error']}"
                )
            lines.append(f"slowest stage: {first['slowest_stage']} ({first['slowest_share']:.0%})")
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    if not path.parent.is_dir():
        raise EntedError(
            f"{path}: cannot write (folder {path.parent} does not exist); create it or "
            "choose another --json"
        )
    write_atomic(path, (json.dumps(result, indent=1) + "\n").encode())
