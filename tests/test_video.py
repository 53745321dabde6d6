"""Videos without the network: telling videos from photos, the container copied faithfully
(sound bytes, timestamps, rotation, colour), damaged files, tracking, steadying, flicker.

Clips are made here (video/synthetic.py): the bundled example photo moving over a background,
fresh noise in every frame, a sine tone as the sound track."""

import itertools
import re
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from ented_cli.errors import InputError, UsageError
from ented_cli.paths import InputItem, expand_inputs, plan_output, sniff_video
from ented_cli.video.container import VideoSink, VideoSource
from ented_cli.video.flicker import FlickerMeter
from ented_cli.video.settings import EncodeSettings
from ented_cli.video.steady import Steadier
from ented_cli.video.synthetic import make_face_clip, placement
from ented_cli.video.tracking import FaceTracker, OneEuro
from tests.conftest import EXAMPLES

PHOTO = EXAMPLES / "astronaut_degraded.jpg"
SIZE = (320, 180)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return cv2.imread(str(PHOTO))


@pytest.fixture(scope="module")
def clip(tmp_path_factory, photo) -> Path:
    """A phone-like clip: shown 180 x 320 (portrait), coded sideways with a rotation, variable
    frame rate, AAC sine tone."""
    path = tmp_path_factory.mktemp("clips") / "phone.mp4"
    make_face_clip(path, photo, size=SIZE[::-1], frames=24, rotation=-90, vfr=True)
    return path


def copy_video(src: Path, dst: Path, start=None, end=None, settings=None) -> VideoSink:
    """The container round trip of `ented restore` with the pictures left as they are."""
    muxer = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}[dst.suffix]
    with VideoSource(src, src.name, start, end) as source:
        sink = VideoSink(dst, muxer, source, settings or EncodeSettings())
        for item in source.items():
            if hasattr(item, "pixels"):
                sink.write_picture(item.pixels, item)
            else:
                sink.write_packet(item)
        sink.close()
    return sink


def audio_packets(path: Path) -> list[tuple[float, bytes]]:
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        return [(float(p.pts * p.time_base), bytes(p)) for p in c.demux(stream) if p.size]


def video_frames(path: Path) -> list:
    with av.open(str(path)) as c:
        return [(f.time, f.rotation, f.to_ndarray(format="bgr24")) for f in c.decode(video=0)]


# -- telling videos from photos ---------------------------------------------------------------
def test_videos_are_told_from_photos_by_their_bytes_not_their_names(clip, tmp_path):
    odd = tmp_path / "holiday.bin"  # a clip with a name that says nothing
    odd.write_bytes(clip.read_bytes())
    (tmp_path / "photo.jpg").write_bytes(PHOTO.read_bytes())
    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic"
    assert sniff_video(clip.read_bytes()[:512]) == ".mp4"
    assert sniff_video(heic) is None  # HEIC photos share the ISO box format
    assert sniff_video(PHOTO.read_bytes()[:512]) is None
    items, problems = expand_inputs([str(odd), str(tmp_path / "photo.jpg")], videos=True)
    assert not problems and [i.video for i in items] == [True, False]


def test_a_folder_gives_its_videos_next_to_its_photos(clip, tmp_path):
    (tmp_path / "a.jpg").write_bytes(PHOTO.read_bytes())
    (tmp_path / "b.mov").write_bytes(clip.read_bytes())
    items, problems = expand_inputs([str(tmp_path)], videos=True)
    assert not problems
    assert [(i.path.name, i.video) for i in items] == [("a.jpg", False), ("b.mov", True)]
    photos_only, _ = expand_inputs([str(tmp_path)])  # eval, bench, explain: photos only
    assert [i.path.name for i in photos_only] == ["a.jpg"]


def test_a_video_keeps_its_container_and_o_names_a_video_file(tmp_path):
    clip = InputItem(Path("in/clip.mov"), "in/clip.mov", Path("clip.mov"), video=True)
    camcorder = InputItem(Path("00001.MTS"), "00001.MTS", Path("00001.MTS"), video=True)
    photo = InputItem(Path("a.jpg"), "a.jpg", Path("a.jpg"))
    plan = dict(many=False, suffix=None, ext=None)
    assert plan_output(clip, None, **plan) == Path("results/clip.mov")
    assert plan_output(clip, None, **{**plan, "ext": "png"}) == Path("results/clip.mov")
    assert plan_output(camcorder, "out/", **plan) == Path("out/00001.mp4")
    assert plan_output(clip, "fixed.mp4", **plan) == Path("fixed.mp4")
    for item, output in ((clip, "fixed.jpg"), (clip, "fixed.mts"), (photo, "x.mp4"), (clip, "-")):
        with pytest.raises(UsageError, match="video"):
            plan_output(item, output, **plan)


# -- the container, copied faithfully --------------------------------------------------------
def test_sound_timestamps_rotation_and_colour_survive_the_round_trip(clip, tmp_path):
    out = tmp_path / "out.mp4"
    sink = copy_video(clip, out)
    assert sink.copied == ["audio aac (#1)"] and sink.dropped == []
    # The sound: every packet, byte for byte, at the same time.
    assert audio_packets(out) == audio_packets(clip)
    before, after = video_frames(clip), video_frames(out)
    # Same pictures at the same (variable) times: frame count, duration and A/V sync.
    assert [t for t, _, _ in after] == [t for t, _, _ in before]
    assert len({round(b[0] - a[0], 4) for a, b in itertools.pairwise(before)}) == 2  # VFR
    # Shown the same way up: the display matrix is kept, the pixels are not turned.
    assert {r for _, r, _ in after} == {-90}
    assert after[0][2].shape == before[0][2].shape == (SIZE[1], SIZE[0], 3)  # coded sideways
    # Re-encoded at CRF 18: close to the input everywhere (the encoder smooths some of the
    # clip's noise) and no colour shift (the BGR <-> YUV conversions round without bias).
    diffs = [a[2].astype(int) - b[2].astype(int) for a, b in zip(after, before)]
    assert np.mean([np.abs(d).mean() for d in diffs]) < 3.0
    assert np.abs(np.mean([d.mean(axis=(0, 1)) for d in diffs], axis=0)).max() < 0.3
    with av.open(str(out)) as c:
        cc = c.streams.video[0].codec_context
        assert (cc.name, cc.pix_fmt) == ("h264", "yuv420p")
        assert (int(cc.colorspace), int(cc.color_range), int(cc.color_primaries)) == (1, 1, 1)


def test_start_and_end_give_that_part_with_its_sound_in_sync(clip, tmp_path):
    out = tmp_path / "part.mp4"
    copy_video(clip, out, start=0.2, end=0.5)
    before = [t for t, _, _ in video_frames(clip)]
    after = [t for t, _, _ in video_frames(out)]
    expected = [t - 0.2 for t in before if 0.2 - 1e-6 <= t < 0.5 - 1e-6]
    assert after == pytest.approx(expected, abs=1e-4) and len(after) >= 6
    # The sound starts at the same place relative to the pictures (within one frame).
    sound_in = [(t, b) for t, b in audio_packets(clip) if 0.2 - 1e-6 <= t < 0.5]
    sound_out = audio_packets(out)
    assert [b for _, b in sound_out] == [b for _, b in sound_in]
    assert sound_out[0][0] == pytest.approx(sound_in[0][0] - 0.2, abs=1 / 30)


def test_webm_gets_vp9_and_a_crf_beyond_the_codecs_scale_is_refused(clip, tmp_path):
    out = tmp_path / "out.webm"
    with VideoSource(clip, clip.name, end=0.1) as source:
        sink = VideoSink(out, "webm", source, EncodeSettings(preset="ultrafast"))
        for item in source.items():
            if hasattr(item, "pixels"):
                sink.write_picture(item.pixels, item)
        sink.close()
    assert (sink.codec, sink.crf) == ("vp9", 24)
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "vp9"
    with pytest.raises(InputError, match="--crf 60 is beyond h264's range 0-51"):
        copy_video(clip, tmp_path / "x.mp4", settings=EncodeSettings(crf=60))


def test_a_stream_the_container_cannot_hold_is_dropped_and_named(tmp_path, photo):
    src = tmp_path / "in.mov"  # telephone-style mu-law sound: QuickTime holds it, MP4 does not
    out = av.open(str(src), "w")
    tags = {"title": "Holiday", "creation_time": "2020-07-01T10:00:00.000000Z"}
    out.metadata.update(tags)
    video = out.add_stream("libx264", rate=10)
    video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
    mulaw = out.add_stream("pcm_mulaw", rate=8000)
    mulaw.layout = "mono"
    for i in range(5):
        frame = av.VideoFrame.from_ndarray(cv2.resize(photo, (64, 64)), format="bgr24")
        frame.pts = i
        out.mux(video.encode(frame))
        silence = np.zeros((1, 800), np.int16)
        sound = av.AudioFrame.from_ndarray(silence, format="s16", layout="mono")
        sound.sample_rate, sound.pts = 8000, i * 800
        out.mux(mulaw.encode(sound))
    out.mux(video.encode(None))
    out.mux(mulaw.encode(None))
    out.close()
    sink = copy_video(src, tmp_path / "out.mp4")
    assert sink.dropped == ["audio pcm_mulaw (#1)"]
    kept = copy_video(src, tmp_path / "out.mov")
    assert kept.copied == ["audio pcm_mulaw (#1)"] and not kept.dropped
    for path in (tmp_path / "out.mp4", tmp_path / "out.mov"):  # the container's tags stay
        with av.open(str(path)) as c:
            assert {k: c.metadata.get(k) for k in tags} == tags


CUES = [(0.1, 0.4, b"Hello there"), (0.6, 0.3, b"{\\i1}Second{\\i0} line")]  # start, length, text
ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\nFormat: "
    b"Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
    b"Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, "
    b"Shadow, Alignment, MarginL, MarginR, MarginV, Encoding\nStyle: Default,Arial,16,&Hffffff,"
    b"&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n[Events]\nFormat: Layer, Start, "
    b"End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)


def clip_with_extras(path: Path, photo, subtitles=None, data=None, font=False, timecode=None):
    """A 1 s clip (64 x 64 H.264, 10 pictures) with what a camera or an editor adds: subtitles
    holding CUES in the codec `subtitles` (French), a data track of the codec `data` (GoPro
    telemetry is `bin_data` in MP4; drones put `klv` in MPEG-TS), a font attachment for the
    subtitles, a `timecode` (MP4/MOV write it as a tmcd track)."""
    out = av.open(str(path), "w")
    if timecode:
        out.metadata["timecode"] = timecode
    video = out.add_stream("libx264", rate=10)
    video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
    packets = []
    if subtitles:
        sub = out.add_stream(subtitles)
        sub.codec_context.time_base = Fraction(1, 1000)
        sub.codec_context.subtitle_header = ASS_HEADER
        sub.metadata["language"] = "fre"
        for start, length, text in CUES:
            cue = av.subtitles.subtitle.SubtitleSet.create(
                b"0,0,Default,,0,0,0,," + text, 0, int(length * 1000)
            )
            packet = sub.codec_context.encode_subtitle(cue)
            packet.pts = packet.dts = int(start * 1000)
            packet.duration, packet.time_base = int(length * 1000), Fraction(1, 1000)
            packet.stream = sub
            packets.append(packet)
    if data:
        track = out.add_data_stream(data)
        for i in range(10):
            packet = av.Packet(b"reading %d" % i)
            packet.pts = packet.dts = i * 100
            packet.duration, packet.time_base = 100, Fraction(1, 1000)
            packet.stream = track
            packets.append(packet)
    if font:
        out.add_attachment("subtitles.ttf", "font/ttf", b"not really a font" * 4)
    for i in range(10):
        frame = av.VideoFrame.from_ndarray(cv2.resize(photo, (64, 64)), format="bgr24")
        frame.pts = i
        out.mux(video.encode(frame))
    out.mux(video.encode(None))
    out.mux(packets)
    out.close()


def cues(path: Path) -> list[tuple[float, float, bytes]]:
    """The subtitle cues a player shows: start and length (s), text with its styling tags."""
    with av.open(str(path)) as c:
        (stream,) = c.streams.subtitles
        shown = []
        for packet in c.demux(stream):
            if packet.size == 0:
                continue
            cue = stream.codec_context.decode2(packet)
            if cue is None or len(cue) == 0:  # MP4's empty sample between two cues
                continue
            text = cue[0].ass.split(b",", 8)[8]  # ReadOrder, Layer, Style, ..., Text
            start, length = packet.pts * packet.time_base, packet.duration * packet.time_base
            shown.append((round(float(start), 3), round(float(length), 3), text))
        return shown


def plain(text: bytes) -> bytes:
    return re.sub(rb"{[^}]*}", b"", text)


def data_packets(path: Path) -> list[tuple[float, bytes]]:
    with av.open(str(path)) as c:
        (stream,) = c.streams.data
        return [(float(p.pts * p.time_base), bytes(p)) for p in c.demux(stream) if p.size]


@pytest.mark.parametrize(
    "source, codec, output, kept",
    [
        ("phone.mp4", "mov_text", ".mp4", "copied"),
        ("phone.mp4", "mov_text", ".mkv", "subtitle mov_text (#1) as ass"),
        ("film.mkv", "subrip", ".mp4", "subtitle subrip (#1) as mov_text"),
        ("anime.mkv", "ass", ".mp4", "subtitle ass (#1) as mov_text"),
    ],
)
def test_subtitles_keep_every_cue_copied_or_converted_to_what_the_container_holds(
    tmp_path, photo, source, codec, output, kept
):
    src = tmp_path / source
    clip_with_extras(src, photo, subtitles=codec)
    out = tmp_path / f"out{output}"
    sink = copy_video(src, out)
    assert not sink.dropped and sink.note() is None
    if kept == "copied":
        assert sink.copied == ["subtitle mov_text (#1)"] and not sink.converted
    else:
        assert sink.converted == [kept] and not sink.copied
    # Each cue at its time with its text, in italics where it was ({\\r}: back to the style).
    for shown in (cues(src), cues(out)):
        assert [(s, n, plain(t)) for s, n, t in shown] == [(s, n, plain(t)) for s, n, t in CUES]
        assert shown[1][2].startswith(b"{\\i1}Second")
    with av.open(str(out)) as c:
        (stream,) = c.streams.subtitles
        assert stream.metadata.get("language") == "fre"
    if kept == "copied":  # packet for packet, the empty samples between cues too
        with av.open(str(src)) as a, av.open(str(out)) as b:
            before = [(p.pts, p.duration, bytes(p)) for p in a.demux(a.streams.subtitles[0])]
            after = [(p.pts, p.duration, bytes(p)) for p in b.demux(b.streams.subtitles[0])]
        assert after == before


def test_data_tracks_are_copied_where_the_container_takes_them_and_named_where_not(tmp_path, photo):
    gopro = tmp_path / "gopro.mp4"
    clip_with_extras(gopro, photo, data="bin_data")
    sink = copy_video(gopro, tmp_path / "out.mp4")
    assert sink.copied == ["data bin_data (#1)"] and sink.note() is None
    assert data_packets(tmp_path / "out.mp4") == data_packets(gopro)
    sink = copy_video(gopro, tmp_path / "out.mkv")
    assert sink.dropped == ["data bin_data (#1)"]
    assert sink.note() == (
        "gopro.mp4: dropped data bin_data (#1), which .mkv files cannot hold (.mp4 and .mov can)"
    )
    drone = tmp_path / "drone.ts"
    clip_with_extras(drone, photo, data="klv")
    sink = copy_video(drone, tmp_path / "drone.mp4")
    assert sink.note() == "drone.ts: dropped data klv (#1), which .mp4 files cannot hold (.mov can)"
    assert copy_video(drone, tmp_path / "drone.mov").copied == ["data klv (#1)"]
    # (MPEG-TS gives its packets no length, and a MOV reader hides a last sample of length 0)
    assert data_packets(tmp_path / "drone.mov") == data_packets(drone)[:-1]


def test_a_timecode_is_kept_and_a_part_drops_it_with_a_note(tmp_path, photo):
    src = tmp_path / "camera.mov"
    clip_with_extras(src, photo, timecode="10:00:00:00")

    def timecodes(path: Path) -> set[str]:
        with av.open(str(path)) as c:
            tags = [c.metadata, *(s.metadata for s in c.streams)]
            return {v for t in tags for k, v in t.items() if k.lower() == "timecode"}

    (timecode,) = timecodes(src)
    for name in ("out.mov", "out.mp4"):  # the tmcd track, written again
        sink = copy_video(src, tmp_path / name)
        assert sink.copied == ["data timecode (#1)"] and sink.note() is None
        with av.open(str(tmp_path / name)) as c:
            (track,) = c.streams.data
            assert track.metadata["timecode"] == timecode
    sink = copy_video(src, tmp_path / "out.mkv")  # Matroska: a tag on the video track
    assert timecodes(tmp_path / "out.mkv") == {timecode} and sink.note() is None
    part = tmp_path / "part.mov"
    sink = copy_video(src, part, start=0.5)
    assert sink.dropped == ["data timecode (#1)"] and timecodes(part) == set()
    assert sink.note() == (
        "camera.mov: dropped data timecode (#1): it gives the start of the whole video, "
        "not of the part"
    )


def test_fonts_for_the_subtitles_stay_in_matroska_and_are_named_when_dropped(tmp_path, photo):
    src = tmp_path / "anime.mkv"
    clip_with_extras(src, photo, subtitles="ass", font=True)
    sink = copy_video(src, tmp_path / "out.mkv")
    assert sink.copied == ["subtitle ass (#1)", "attachment subtitles.ttf (#2)"]
    with av.open(str(src)) as a, av.open(str(tmp_path / "out.mkv")) as b:
        assert [bytes(s.data) for s in b.streams.attachments] == [
            bytes(s.data) for s in a.streams.attachments
        ]
    sink = copy_video(src, tmp_path / "out.mp4")
    assert sink.converted == ["subtitle ass (#1) as mov_text"]
    assert sink.note() == (
        "anime.mkv: dropped attachment subtitles.ttf (#2), which .mp4 files cannot hold (.mkv can)"
    )


def test_damaged_and_pictureless_files_are_one_line_errors_naming_them(clip, tmp_path):
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"  # an interrupted download: the index at the end is missing
    cut.write_bytes(data[: len(data) // 2])
    faststart = tmp_path / "faststart.mp4"  # index first, pictures cut off
    copy_video(clip, faststart)
    short = tmp_path / "short.mp4"
    short.write_bytes(faststart.read_bytes()[: faststart.stat().st_size // 2])
    sound = tmp_path / "sound.m4a"
    out = av.open(str(sound), "w")
    aac = out.add_stream("aac", rate=48000)
    aac.layout = "mono"
    for k in range(0, 48000, 1024):
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate, frame.pts = 48000, k
        out.mux(aac.encode(frame))
    out.mux(aac.encode(None))
    out.close()
    expected = {cut: "truncated", short: "truncated", sound: "no video stream"}
    for path, words in expected.items():
        with pytest.raises(InputError) as caught:
            with VideoSource(path, path.name) as src:
                for _ in src.items():
                    pass
        message = str(caught.value)
        assert message.startswith(path.name + ":") and words in message and "\n" not in message


# -- tracking -------------------------------------------------------------------------------
def truth_landmarks(matrices) -> list[np.ndarray]:
    """Five points on the photo's face (eyes, nose, mouth corners), placed like the photo."""
    points = np.array([[205, 100], [245, 103], [222, 125], [204, 140], [240, 142]], np.float64)
    return [points @ m[:, :2].T + m[:, 2] for m in matrices]


def test_faces_are_followed_between_detections_and_do_not_jitter(tmp_path, photo):
    """Detections every 5 frames with 2 px of noise; the tracker must follow the moving face
    between them by optical flow and hold it steadier than per-frame detections would."""
    size, frames = (480, 270), 40
    path = tmp_path / "moving.mp4"
    truth = make_face_clip(path, photo, size=size, frames=frames, audio=False)
    pictures = [f.to_ndarray(format="bgr24") for f in av.open(str(path)).decode(video=0)]
    gt = truth_landmarks(truth.matrices)
    rng = np.random.default_rng(1)
    noisy = [p + rng.normal(0, 2.0, p.shape) for p in gt]

    def detection(i):
        from ented_cli.faces.detect import Face

        lm = noisy[i]
        box = np.concatenate([lm.min(0) - 25, lm.max(0) + 25]).astype(np.float32)
        return [Face(box, 0.99, lm.astype(np.float32))]

    def run(every: int) -> list[np.ndarray]:
        tracker = FaceTracker()
        out = []
        for i, (picture, t) in enumerate(zip(pictures, truth.times)):
            (track,) = tracker.step(picture, t, detection(i) if i % every == 0 else None)
            assert track.visible  # followed on every frame, never taken for lost
            out.append(track.landmarks)
        return out

    tracked, per_frame = run(5), noisy
    error = np.mean([np.linalg.norm(a - b, axis=1).mean() for a, b in zip(tracked, gt)])
    assert error < 2.5  # pixels, with eyes 40 px apart and the face moving ~4 px a frame

    def jitter(points):
        e = [p - g for p, g in zip(points, gt)]
        return np.mean([np.linalg.norm(b - a, axis=1).mean() for a, b in itertools.pairwise(e)])

    assert jitter(tracked) < 0.5 * jitter(per_frame)


def test_a_face_that_leaves_is_not_followed_into_the_background(tmp_path, photo):
    """The photo vanishes after frame 3 and the detector does not look again by itself: the
    flow may hold on to the background, but the face no longer looks like itself, so the track
    is not shown (nothing is restored there) and a detection is asked for."""
    path = tmp_path / "leaves.mp4"
    truth = make_face_clip(
        path, photo, size=(480, 270), frames=6, still=True, noise=0, audio=False, blank_after=3
    )
    pictures = [f.to_ndarray(format="bgr24") for f in av.open(str(path)).decode(video=0)]
    from ented_cli.faces.detect import Face

    (lm,) = truth_landmarks(truth.matrices[:1])
    box = np.concatenate([lm.min(0) - 25, lm.max(0) + 25]).astype(np.float32)
    tracker = FaceTracker()
    shown, asked = [], []
    for i, (picture, t) in enumerate(zip(pictures, truth.times)):
        found = [Face(box, 0.99, lm.astype(np.float32))] if i == 0 else None
        (track,) = tracker.step(picture, t, found)
        shown.append(track.visible)
        asked.append(tracker.want_detection)
    assert shown == [True, True, True, False, False, False]
    assert asked[3]


def test_one_euro_steadies_a_still_point_and_follows_a_moving_one():
    rng = np.random.default_rng(0)
    still = OneEuro()
    noise = [still(rng.normal(0, 1, (1, 2)), i / 30, scale=100) for i in range(60)]
    assert np.std(noise[30:]) < 0.5  # from 1 px of noise on a 100 px face
    moving = OneEuro()
    path = [moving(np.array([[i * 5.0, 0.0]]), i / 30, scale=100) for i in range(60)]
    assert abs(path[-1][0, 0] - 59 * 5.0) < 2.5  # less than half a frame behind at 1.5 faces/s


# -- steadying and flicker --------------------------------------------------------------------
def test_steadying_calms_noise_where_the_face_is_still_and_follows_where_it_moves():
    rng = np.random.default_rng(0)
    base = np.full((256, 256, 3), 0.5, np.float32)
    steadier, inputs, outputs = Steadier(), [], []
    for i in range(20):
        restored = base + rng.normal(0, 0.02, base.shape).astype(np.float32)
        face = base.copy()
        if i >= 10:  # the mouth opens: a real change of the input face
            face[150:200, 100:156] = 0.1
            restored[150:200, 100:156] = 0.1
        inputs.append(restored)
        outputs.append(steadier(0, i, face, restored))
    change_in = np.mean([np.abs(b - a)[:100].mean() for a, b in itertools.pairwise(inputs)])
    change_out = np.mean([np.abs(b - a)[:100].mean() for a, b in itertools.pairwise(outputs)])
    assert change_out < 0.6 * change_in
    # At the frame the mouth opened, the output already shows it (no ghost of the closed one).
    assert np.abs(outputs[10][160:190, 110:146] - 0.1).mean() < 0.02


def test_flicker_is_the_mean_luma_change_of_the_aligned_face():
    meter = FlickerMeter()
    matrix = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    frame = np.zeros((256, 256, 3), np.uint8)
    for i, level in enumerate((0.2, 0.3, 0.2)):
        crop = np.full((256, 256, 3), level, np.float32)
        frame[:] = 100 + 5 * i  # the output changes 5 levels a frame, the input 25.5
        meter.add(0, i, crop, frame, matrix)
    result = meter.result()
    assert result["frame_pairs"] == 2
    assert result["input"] == pytest.approx(25.5, abs=0.05)
    assert result["output"] == pytest.approx(5.0, abs=0.05)


def test_the_synthetic_clip_is_what_it_says(tmp_path, photo):
    truth = make_face_clip(tmp_path / "c.mp4", photo, size=(160, 90), frames=4, vfr=True)
    assert truth.time_base == Fraction(1, 90000)
    assert np.allclose(truth.matrices[0], placement(0.0, photo.shape[1::-1], (160, 90), False))
