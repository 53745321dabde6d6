"""`ented restore clip.mp4`: videos end to end with the real detector, identity model and the
shipped weights, on clips made here (the example photo moving over a background, a sine tone)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ented_cli.cli.main import main
from ented_cli.video.settings import EncodeSettings
from ented_cli.video.synthetic import make_face_clip
from tests.conftest import EXAMPLES
from tests.test_video import (
    CUES,
    audio_packets,
    clip_with_extras,
    copy_video,
    cues,
    plain,
    video_frames,
)

REFERENCE = EXAMPLES / "astronaut.png"
PHOTO = EXAMPLES / "astronaut_degraded.jpg"
FACE_IN_PHOTO = (182, 58, 269, 172)  # the face's box in PHOTO (x0, y0, x1, y1)

pytestmark = pytest.mark.slow


def ented(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def upright(coded: np.ndarray, rotation: int) -> np.ndarray:
    return np.rot90(coded, round(rotation / 90) % 4)


def face_mask(shape, matrix, grow: float) -> np.ndarray:
    """Where the photo's face lands in a frame, its box grown by `grow` of its size each side."""
    x0, y0, x1, y1 = FACE_IN_PHOTO
    w, h = x1 - x0, y1 - y0
    corners = np.array([[x0 - grow * w, y0 - grow * h], [x1 + grow * w, y1 + grow * h]])
    (a, b), (c, d) = corners @ matrix[:, :2].T + matrix[:, 2]
    mask = np.zeros(shape[:2], bool)
    mask[max(int(b), 0) : int(d) + 1, max(int(a), 0) : int(c) + 1] = True
    return mask


def test_a_phone_video_comes_back_with_its_sound_length_orientation_and_restored_faces(
    tmp_path,
):
    """The issue's promise: same sound (bytes), length and frame times, same way up, the face
    restored, the rest of the picture as a plain re-encode leaves it, and no shimmer."""
    clip = tmp_path / "phone.mp4"
    photo = cv2.imread(str(PHOTO))
    truth = make_face_clip(clip, photo, size=(288, 512), frames=16, rotation=-90, vfr=True)
    out = tmp_path / "out" / "fixed.mp4"
    # --crf 0: lossless, so that "the rest of the picture untouched" can be checked to the level.
    options = ["--json", "--detect-every", 4, "--crf", 0]
    result = ented("restore", clip, "--ref", REFERENCE, "-o", out, *options)
    assert result.exit_code == 0, result.stderr
    (report,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert report["kind"] == "video" and report["status"] == "restored"
    assert report["frames"] == 16 and report["face_frames"] == 16
    (track,) = report["tracks"]
    assert track["restored"] and track["mode"] == "reference" and track["person"] == "astronaut"
    assert report["streams"]["copied"] == ["audio aac (#1)"]
    assert set(report["timing_ms"]) >= {"decode", "detect", "track", "restore", "paste", "encode"}

    # Sound: byte for byte, at the same times; pictures: same count, same (variable) times.
    assert audio_packets(out) == audio_packets(clip)
    before, after = video_frames(clip), video_frames(out)
    assert [t for t, _, _ in after] == [t for t, _, _ in before]
    with av.open(str(clip)) as a, av.open(str(out)) as b:
        assert b.duration == pytest.approx(a.duration, abs=1e6 / 30)  # within one frame
    # Same way up: the rotation is kept.
    assert {r for _, r, _ in after} == {-90}

    # The face changed; away from it the output is what a plain (lossless) re-encode gives.
    plain = tmp_path / "plain.mp4"
    copy_video(clip, plain, settings=EncodeSettings(crf=0))
    reencoded = video_frames(plain)
    face_change, background_change = [], []
    for (_, rot, a), (_, _, b), matrix in zip(after, reencoded, truth.matrices):
        diff = np.abs(upright(a, rot).astype(int) - upright(b, rot).astype(int)).mean(axis=2)
        face_change.append(diff[face_mask(diff.shape, matrix, 0.0)].mean())
        background_change.append(diff[~face_mask(diff.shape, matrix, 0.6)].mean())
    assert np.mean(face_change) > 3.0
    assert np.mean(background_change) < 0.05

    # No shimmer: the restored face changes less from frame to frame than the input's noise.
    flicker = report["flicker"]
    assert flicker["frame_pairs"] == 15 and flicker["output"] < flicker["input"]


def test_a_batch_with_a_truncated_video_and_a_sound_file_carries_on(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    photo = cv2.imread(str(PHOTO))
    make_face_clip(folder / "good.mp4", photo, size=(320, 180), frames=4)
    whole = (folder / "good.mp4").read_bytes()
    (folder / "cut.mp4").write_bytes(whole[: len(whole) // 2])  # an interrupted download
    song = tmp_path / "song.m4a"  # named on the command line: a folder scan skips sound files
    sound = av.open(str(song), "w")
    aac = sound.add_stream("aac", rate=48000)
    aac.layout = "mono"
    frame = av.AudioFrame.from_ndarray(
        np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
    )
    frame.sample_rate, frame.pts = 48000, 0
    sound.mux(aac.encode(frame))
    sound.mux(aac.encode(None))
    sound.close()
    out = tmp_path / "out"
    result = ented("restore", folder, song, "-o", out, "--json", "--faces", "largest")
    assert result.exit_code == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 2
    assert any("cut.mp4: cannot read this video" in line for line in errors)
    assert any("song.m4a: has no video stream (an audio-only file)" in line for line in errors)
    reports = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert reports["good.mp4"]["status"] == "restored"
    assert sorted(p.name for p in out.iterdir()) == ["good.mp4"]  # nothing else, no temp file


def _undecodable_copy(clip: Path, dst: Path) -> None:
    """`clip` with its codec's name changed to one this FFmpeg build has no decoder for: the
    container still opens, but no picture can be decoded. MP4: the sample entry's fourcc in the
    video track's `stsd` box (`avc1` → `evc1`, MPEG-5 EVC); Matroska: the track's CodecID
    (`V_MPEG4/ISO/AVC` → a name FFmpeg does not know, same length)."""
    data = clip.read_bytes()
    if clip.suffix == ".mp4":
        at = data.index(b"stsd") + 16  # box type, version/flags, entry count, entry size
        assert data[at : at + 4] == b"avc1"
        data = data[:at] + b"evc1" + data[at + 4 :]
    else:
        assert data.count(b"V_MPEG4/ISO/AVC") == 1
        data = data.replace(b"V_MPEG4/ISO/AVC", b"V_UNKNOWN/XYZ/Q")
    dst.write_bytes(data)


def test_a_video_in_a_codec_ented_cannot_decode_is_one_line_and_the_batch_carries_on(tmp_path):
    """An MP4 (with its sound, which could be decoded) and an MKV (its only stream the video)
    whose video codec FFmpeg cannot decode: each is one error line naming it and saying what to
    do, the photo beside them is restored, exit 3."""
    folder, made = tmp_path / "in", tmp_path / "made"
    folder.mkdir()
    made.mkdir()
    photo = cv2.imread(str(PHOTO))
    for name, audio in (("evc.mp4", True), ("odd.mkv", False)):
        make_face_clip(made / name, photo, size=(160, 90), frames=4, audio=audio)
        _undecodable_copy(made / name, folder / name)
    (folder / "photo.jpg").write_bytes(PHOTO.read_bytes())
    out = tmp_path / "out"
    result = ented("restore", folder, "-o", out, "--json", "--no-guard")  # the photo: restored
    assert result.exit_code == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 2
    for name in ("evc.mp4", "odd.mkv"):
        (line,) = [e for e in errors if f"{name}: its video codec is not supported" in e]
        assert "convert it to H.264 first" in line
    reports = {Path(r["input"]).name: r for r in map(json.loads, result.stdout.splitlines())}
    assert reports["photo.jpg"]["status"] == "restored"
    assert reports["evc.mp4"]["status"] == reports["odd.mkv"]["status"] == "error"
    assert sorted(p.name for p in out.iterdir()) == ["photo.jpg"]  # nothing else, no temp file


def test_a_video_without_faces_is_copied_byte_for_byte(tmp_path):
    clip = tmp_path / "street.mp4"
    make_face_clip(clip, cv2.imread(str(PHOTO)), size=(320, 180), frames=10, blank_after=0)
    out = tmp_path / "out" / "street.mp4"
    result = ented("restore", clip, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    (report,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert report["status"] == "no_face" and report["frames"] == 10
    assert out.read_bytes() == clip.read_bytes()
    assert "no face restored; wrote an unchanged copy" in result.stderr


def test_subtitles_reach_an_mp4_as_text_and_what_it_cannot_hold_is_one_note(tmp_path):
    """A Matroska film with SubRip subtitles and their font, written as MP4: the cues arrive as
    MP4 text at their times, and one warning line names the font left out and where it fits."""
    film = tmp_path / "film.mkv"
    clip_with_extras(film, cv2.imread(str(PHOTO)), subtitles="subrip", font=True)
    out = tmp_path / "film.mp4"
    result = ented("restore", film, "-o", out, "--json")
    assert result.exit_code == 0, result.stderr
    (report,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert report["streams"]["converted"] == ["subtitle subrip (#1) as mov_text"]
    assert report["streams"]["dropped"] == ["attachment subtitles.ttf (#2)"]
    (note,) = [line for line in result.stderr.splitlines() if "dropped" in line]
    assert note.endswith(
        "film.mkv: dropped attachment subtitles.ttf (#2), which .mp4 files cannot hold (.mkv can)"
    )
    assert [(s, n, plain(t)) for s, n, t in cues(out)] == [(s, n, plain(t)) for s, n, t in CUES]


def test_ctrl_c_leaves_no_partial_video(tmp_path):
    clip = tmp_path / "long.mp4"
    make_face_clip(clip, cv2.imread(str(PHOTO)), size=(320, 180), frames=300, audio=False)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ented_cli", "restore", str(clip), "-o", str(out) + "/"],
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        # Ctrl-C as in a terminal, also when the tests run in the background (where the shell
        # starts them with SIGINT ignored, and Python then never raises KeyboardInterrupt)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not (out.is_dir() and any(out.iterdir())):  # the temp file: frames are flowing
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()
    assert list(out.iterdir()) == []


def _peak_rss_mib(args: list[str]) -> float:
    """Peak resident memory (MiB) of one `ented` process, from its own high-water mark.

    (Not `wait4`'s ru_maxrss: a child started by vfork inherits the parent's peak at exec, so a
    big test process would be counted as the child's.)"""
    proc = subprocess.Popen(
        [sys.executable, "-m", "ented_cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
    )
    status = Path(f"/proc/{proc.pid}/status")
    peak = 0
    while proc.poll() is None:
        try:
            text = status.read_text()
        except OSError:
            break
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                peak = max(peak, int(line.split()[1]))
        time.sleep(0.2)
    _, stderr = proc.communicate()
    assert proc.returncode == 0, stderr.decode()
    return peak / 1024


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads /proc (Linux)")
def test_memory_stays_flat_from_a_one_minute_to_a_ten_minute_1080p_video(tmp_path):
    """Frames stream through bounded queues: ten times the length, the same peak memory. The
    clips are 1080p at one frame every 2 s, with the face in the first seconds only, so the
    test costs decoding and encoding (330 frames), not the network."""
    photo = cv2.imread(str(PHOTO))
    peaks = {}
    for minutes in (1, 10):
        clip = tmp_path / f"{minutes}min.mp4"
        frames = minutes * 30
        make_face_clip(
            clip, photo, size=(1920, 1080), fps=0.5, frames=frames, noise=0, blank_after=2
        )
        args = ["restore", str(clip), "-o", str(tmp_path / "out") + "/", "-q"]
        args += ["--preset", "ultrafast", "--detect-every", "1000", "--no-steady"]
        peaks[minutes] = _peak_rss_mib(args)
    print(f"peak RSS: 1 minute {peaks[1]:.0f} MiB, 10 minutes {peaks[10]:.0f} MiB")
    # ~40 MiB more is the plateau the longer run reaches in its first seconds; a leak of even
    # 0.5 MiB a frame would add 135 MiB over the 270 extra frames.
    assert peaks[10] < peaks[1] + 100, peaks


def test_bench_video_reports_frames_per_second_by_stage_and_flicker(tmp_path):
    out = tmp_path / "bench.json"
    result = ented("bench", "--video", "--quick", "--frames", 3, "--json", out, "-q")
    assert result.exit_code == 0, result.stderr
    assert "flicker in -> out" in result.stdout
    (row,) = json.loads(out.read_text())["devices"][0]["video"]["rows"]
    assert row["setting"] == "tracked" and row["frames"] == 3 and row["faces"] == 3
    assert row["frames_per_s"] > 0 and row["cpu_ms_per_frame"] > 0
    assert set(row["ms_per_frame"]) == {
        "decode",
        "detect",
        "track",
        "align",
        "match",
        "restore",
        "paste",
        "encode",
    }
    assert row["flicker"]["frame_pairs"] == 2
