"""Video files in and out through PyAV (FFmpeg's libraries, shipped inside the `av` wheel: no
system ffmpeg needed).

`VideoSource` opens a file, learns what it holds (`VideoInfo`: size, frame rate, time base, pixel
format, colour, rotation) and yields, in file order, its pictures as BGR arrays with their own
timestamps (`Picture`) and every other stream's packets untouched. `VideoSink` encodes the
restored pictures with the same timestamps, rotation, pixel format and colour tags
(`EncodeSettings`: codec, CRF, preset), and passes the other streams on as video/streams.py
decides: copied as they are (audio is never re-encoded), text subtitles converted to a format
the output container holds, the rest dropped and named in `VideoSink.note()`.

Every FFmpeg error becomes an `InputError` naming the file: a damaged or truncated video fails
alone and the batch carries on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from ented_cli.errors import InputError, UsageError
from ented_cli.video.settings import DEFAULT_CRF, ENCODERS, PRESETS, EncodeSettings
from ented_cli.video.streams import OtherStreams, is_timecode

# x264/x265 take the preset names; VP9 and SVT-AV1 take numbers (higher = faster).
_VP9_CPU_USED = dict(zip(PRESETS, (8, 7, 6, 5, 4, 3, 2, 1, 0)))
_SVT_PRESET = dict(zip(PRESETS, (11, 11, 10, 9, 8, 7, 5, 4, 2)))
# Output container (FFmpeg muxer) for each writable extension.
MUXERS = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mov": "mov",
    ".mkv": "matroska",
    ".webm": "webm",
    ".avi": "avi",
}
# Tags the muxer writes itself, or that would be wrong after re-encoding (Matroska's DURATION
# after --start/--end, the encoder of the old video stream).
_OWN_TAGS = {"major_brand", "minor_version", "compatible_brands", "encoder", "duration"}
# The quality scale of each codec (x264/x265: 0-51; VP9, SVT-AV1: 0-63).
_CRF_MAX = {"h264": 51, "hevc": 51, "vp9": 63, "av1": 63}
# swscale's colour matrices, from the stream's AVColorSpace (both are FFmpeg's numbering).
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
# Seconds of other streams read past --end: they are interleaved with the video around it.
_INTERLEAVE_S = 2.0
# Pictures ending more than this share of the stream's stated duration (or 3 frames) before it
# mean a truncated file; edit lists trim less.
_TRUNCATED_SHARE = 0.02


# swscale's flags for YUV <-> BGR: without accurate rounding a round trip darkens every pixel
# by ~2 levels; these make it unbiased (mean error 0.7 levels) at the default's speed.
def _sws_flags() -> int:
    from av.video.reformatter import Interpolation

    return int(Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT)


def _av():
    import av

    av.logging.set_level(None)  # FFmpeg's own log lines stay off stderr; errors raise
    return av


@dataclass
class VideoInfo:
    """What a video holds, read before any picture is restored."""

    width: int
    height: int
    codec: str
    pix_fmt: str
    deep: bool  # more than 8 bits per sample: decoded as 16-bit BGR
    rate: Fraction | None  # average frame rate (the encoder's pace; timestamps decide)
    time_base: Fraction
    frames: int  # as the container states it (0: unknown)
    duration_s: float | None
    stream_duration_s: float | None  # what the video stream's own header says (None: nothing)
    start_time: float  # time of the first picture (s)
    rotation: int  # degrees counter-clockwise to show it upright (phones film sideways)
    display_matrix: tuple[int, ...] | None  # the container's 3x3 matrix, kept as it was
    colour: dict[str, int] = field(default_factory=dict)  # colorspace, color_range, ...
    sample_aspect_ratio: Fraction | None = None

    @property
    def frames_estimate(self) -> int:
        if self.frames:
            return self.frames
        if self.duration_s and self.rate:
            return round(self.duration_s * self.rate)
        return 0


@dataclass
class Picture:
    """One decoded picture: its place in the stream and its pixels."""

    index: int  # 0, 1, 2, ... in output order
    pts: int  # in the stream's time base
    duration: int  # in the stream's time base (0: unknown)
    time: float  # seconds
    pixels: np.ndarray  # H x W x 3 BGR, uint8 (uint16 for deep videos), as coded (not rotated)


def _reason(exc: Exception) -> str:
    """FFmpeg's words for an error, without the errno and the file name PyAV adds."""
    return getattr(exc, "strerror", None) or str(exc)


def _open(path: Path, display: str):
    av = _av()
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise InputError(
            f"{display}: cannot read this video ({_reason(e)}); the file is damaged, "
            "truncated (an interrupted copy or download) or not a video"
        ) from None
    except OSError as e:
        raise InputError(f"{display}: cannot open it ({e.strerror or e})") from None


def _video_stream(container, display: str):
    """The main picture stream (not a cover image); InputError when there is none."""
    streams = [
        s for s in container.streams.video if not (int(s.disposition) & _attached_pic_flag())
    ]
    if not streams:
        what = "an audio-only file" if container.streams.audio else "no picture stream"
        raise InputError(
            f"{display}: has no video stream ({what}); ented restores videos and photos"
        )
    stream = streams[0]
    if stream.codec_context is None:
        raise InputError(
            f"{display}: its video codec is not supported (no decoder in this FFmpeg build); "
            "convert it to H.264 first"
        )
    return stream


def _attached_pic_flag() -> int:
    return int(_av().stream.Disposition.attached_pic)


def probe(path: Path, display: str) -> VideoInfo:
    """Open `path` and decode its first picture: what the sink must reproduce."""
    av = _av()
    container = _open(path, display)
    try:
        stream = _video_stream(container, display)
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError as e:
            raise InputError(
                f"{display}: cannot decode its video ({stream.codec_context.name}: "
                f"{_reason(e)}); the file is damaged or the codec is not supported"
            ) from None
        if first is None:
            raise InputError(f"{display}: its video stream has no picture that can be decoded")
        matrix = next((sd for sd in first.side_data if sd.type.name == "DISPLAYMATRIX"), None)
        deep = max(c.bits for c in first.format.components) > 8
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        stream_s = None if stream.duration is None else float(stream.duration * stream.time_base)
        duration = stream_s or (container.duration / 1e6 if container.duration else None)
        cc = stream.codec_context
        colour = {
            "colorspace": int(first.colorspace),
            "color_range": int(first.color_range),
            "color_primaries": int(cc.color_primaries),
            "color_trc": int(cc.color_trc),
        }
        return VideoInfo(
            width=first.width,
            height=first.height,
            codec=cc.name,
            pix_fmt=first.format.name,
            deep=deep,
            rate=Fraction(rate) if rate else None,
            time_base=Fraction(stream.time_base),
            frames=int(stream.frames or 0),
            duration_s=duration,
            stream_duration_s=stream_s,
            start_time=float(first.time or 0.0),
            rotation=int(round(first.rotation or 0)),
            display_matrix=None if matrix is None else tuple(np.frombuffer(bytes(matrix), "<i4")),
            colour=colour,
            sample_aspect_ratio=stream.sample_aspect_ratio,
        )
    finally:
        container.close()


class VideoSource:
    """`with VideoSource(path, display, start, end) as src:` then `src.info`, `src.others` (the
    streams to copy) and `for item in src.items(): ...` (Pictures and Packets, in file order).

    `start`/`end` are seconds from the first picture; pictures and packets outside are skipped,
    and `shift` (seconds) is what the sink takes off every timestamp so the part starts at 0.
    """

    def __init__(
        self, path: Path, display: str, start: float | None = None, end: float | None = None
    ):
        self.path, self.display = Path(path), display
        self.info = probe(self.path, display)
        self.start = start or 0.0
        self.end = end
        self.shift = self.start  # seconds taken off every timestamp (0: the file's own times)
        self.container = None
        self.stream = None
        self.others: list = []  # every stream but the picture: sound, subtitles, data, fonts
        self.skipped: list = []  # streams of a kind FFmpeg does not know

    def __enter__(self) -> VideoSource:
        self.container = _open(self.path, self.display)
        self.stream = _video_stream(self.container, self.display)
        self.stream.thread_type = "AUTO"  # frame and slice threads in the decoder
        for s in self.container.streams:
            if s is self.stream:
                continue
            if s.type in ("audio", "subtitle", "data", "video", "attachment"):
                self.others.append(s)
            else:
                self.skipped.append(s)
        return self

    def __exit__(self, *exc) -> bool:
        if self.container is not None:
            self.container.close()
        return False

    def items(self) -> Iterator[Picture | object]:
        """Pictures (BGR) and the other streams' packets, in file order, within --start/--end."""
        av = _av()
        info = self.info
        # Without --start nothing is skipped (the sound's priming packets start before 0).
        lo = info.start_time + self.start if self.start > 0 else -float("inf")
        hi = None if self.end is None else info.start_time + self.end
        if self.start > 0:
            # To the key frame at or before --start; the pictures before it are skipped below.
            self.container.seek(int(max(lo - 1.0, 0.0) * 1e6), backward=True)
        fmt = "bgr48le" if info.deep else "bgr24"
        flags = _sws_flags()
        index = 0
        video_done = False
        last_time = last_end = None
        try:
            # (attachments have no packets: they are in the container's header)
            streams = [s for s in self.others if s.type != "attachment"]
            for packet in self.container.demux(self.stream, *streams):
                if packet.stream is self.stream:
                    if video_done:
                        continue
                    for frame in packet.decode():
                        t = _frame_time(frame, last_time, info)
                        last_time = t
                        if t < lo - 1e-6:
                            continue
                        if hi is not None and t >= hi - 1e-6:
                            video_done = True
                            break
                        pixels = frame.to_ndarray(format=fmt, interpolation=flags)
                        pts = frame.pts if frame.pts is not None else round(t / info.time_base)
                        duration = int(frame.duration or 0)
                        last_end = t + float(duration * info.time_base)
                        yield Picture(index, pts, duration, t, pixels)
                        index += 1
                    continue
                if packet.size == 0 or packet.dts is None:  # the demuxer's end-of-stream marks
                    continue
                t = float((packet.pts if packet.pts is not None else packet.dts) * packet.time_base)
                if hi is not None and t >= hi + _INTERLEAVE_S and video_done:
                    break
                if t < lo - 1e-6 or (hi is not None and t >= hi):
                    continue
                yield packet
        except av.error.FFmpegError as e:
            where = "" if last_time is None else f" at {_clock(last_time - info.start_time)}"
            raise InputError(
                f"{self.display}: the video is damaged{where} ({_reason(e)}); nothing was "
                "written for it"
            ) from None
        if index == 0:
            raise InputError(
                f"{self.display}: no picture between --start and --end (the video lasts "
                f"{_clock(info.duration_s or 0)}); check the times"
            )
        stated = info.stream_duration_s
        slack = max(_TRUNCATED_SHARE * (stated or 0), float(3 / info.rate) if info.rate else 0.1)
        if hi is None and stated and last_end < info.start_time + stated - slack:
            # The header promises more than the file holds: an interrupted copy or download.
            raise InputError(
                f"{self.display}: the file is truncated (its pictures end at "
                f"{_clock(last_end - info.start_time)} of {_clock(stated)}); nothing was "
                "written for it"
            )


def _frame_time(frame, last: float | None, info: VideoInfo) -> float:
    if frame.time is not None:
        return float(frame.time)
    step = float(1 / info.rate) if info.rate else 1 / 30
    return 0.0 if last is None else last + step


def _clock(seconds: float) -> str:
    m, s = divmod(max(seconds, 0.0), 60)
    return f"{int(m):02d}:{s:05.2f}"


def muxer_for(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in MUXERS:
        raise UsageError(f"{path}: ented cannot write '{suffix}' videos; use .mp4, .mov or .mkv")
    return MUXERS[suffix]


def _pix_fmt(wanted: str, deep: bool, supported: list[str]) -> str:
    """The input's pixel format when the encoder takes it, else the nearest common one."""
    if wanted in supported:
        return wanted
    if deep and "yuv420p10le" in supported:
        return "yuv420p10le"
    return "yuv420p"


def _encoder_options(codec: str, crf: int, preset: str) -> dict[str, str]:
    if codec == "h264":
        return {"crf": str(crf), "preset": preset}
    if codec == "hevc":
        return {"crf": str(crf), "preset": preset, "x265-params": "log-level=error"}
    if codec == "vp9":
        cpu = _VP9_CPU_USED[preset]
        return {"crf": str(crf), "b": "0", "cpu-used": str(cpu), "row-mt": "1"}
    return {"crf": str(crf), "preset": str(_SVT_PRESET[preset])}  # av1 (SVT-AV1)


class VideoSink:
    """The output container: one encoded picture stream and the copied ones.

    Every stream is added before the first packet is written (the container header is written
    then), so the sink is built from the source's `info` and `others` up front.
    """

    def __init__(
        self,
        path: Path,
        muxer: str,
        source: VideoSource,
        settings: EncodeSettings,
        threads: int | None = None,
    ):
        av = _av()
        info = source.info
        self.display = source.display
        self.info = info
        self.shift = source.shift
        options = {"movflags": "+faststart+use_metadata_tags"} if muxer in ("mp4", "mov") else {}
        self.container = av.open(str(path), "w", format=muxer, options=options)
        try:
            self._add_video(av, muxer, source, settings, threads)
            self._copy_tags(source.container.metadata, self.container.metadata)
            self._keep_timecode(source)
            self.others = OtherStreams(self.container, muxer, source, self._copy_tags)
            chapters = source.container.chapters()
            if chapters and source.shift == 0:  # (a part of the video keeps none)
                self.container.set_chapters(chapters)
        except BaseException:
            self.container.close()
            raise

    @property
    def copied(self) -> list[str]:
        return self.others.copied

    @property
    def converted(self) -> list[str]:
        return self.others.converted

    @property
    def dropped(self) -> list[str]:
        return self.others.dropped

    def note(self) -> str | None:
        """One line naming the streams dropped (and why), or None: after `close()`."""
        return self.others.note(self.display)

    def _add_video(self, av, muxer: str, source: VideoSource, settings, threads) -> None:
        info = self.info
        name = settings.codec_for(muxer)
        encoder = ENCODERS[name]
        if encoder not in self.container.supported_codecs:
            raise InputError(
                f"{self.display}: a {muxer} file cannot hold {name} video; choose another "
                "--codec or output extension"
            )
        crf = DEFAULT_CRF[name] if settings.crf is None else settings.crf
        top = _CRF_MAX[name]
        if crf > top:
            raise InputError(f"{self.display}: --crf {crf} is beyond {name}'s range 0-{top}")
        stream = self.container.add_stream(encoder, rate=info.rate)
        cc = stream.codec_context
        stream.width, stream.height = info.width, info.height
        formats = [f.name for f in av.codec.Codec(encoder, "w").video_formats or []]
        stream.pix_fmt = _pix_fmt(info.pix_fmt, info.deep, formats)
        cc.time_base = info.time_base  # the input's: every picture keeps its timestamp
        if info.sample_aspect_ratio:
            cc.sample_aspect_ratio = info.sample_aspect_ratio
        for key, value in info.colour.items():
            if value:
                setattr(cc, key, value)
        if threads:
            cc.thread_count = threads
        stream.options = _encoder_options(name, crf, settings.preset)
        if name == "av1":  # SVT-AV1 writes its banner to stderr unless told: errors only
            os.environ.setdefault("SVT_LOG", "1")
        if name == "hevc" and muxer in ("mp4", "mov"):
            cc.codec_tag = "hvc1"  # what Apple players look for
        if info.display_matrix is not None:
            stream.set_display_matrix(list(info.display_matrix))
        self._copy_tags(source.stream.metadata, stream.metadata)
        self.video = stream
        self.codec, self.crf, self.pix_fmt = name, crf, stream.pix_fmt
        self._in_fmt = "bgr48le" if info.deep else "bgr24"
        self._matrix = _SWS_MATRIX.get(info.colour.get("colorspace", 2))
        self._range = info.colour.get("color_range") or None
        self._flags = _sws_flags()

    def _keep_timecode(self, source: VideoSource) -> None:
        """A timecode track's time goes on the video stream, where the MP4/MOV muxer makes the
        track from it again; a part from --start would carry the whole video's, so none."""
        tags = [self.container.metadata, self.video.metadata]
        if self.shift:
            for t in tags:
                t.pop("timecode", None)
            return
        for s in source.others:
            if is_timecode(s) and not any("timecode" in t for t in tags):
                self.video.metadata["timecode"] = s.metadata["timecode"]

    @staticmethod
    def _copy_tags(src, dst) -> None:
        for key, value in src.items():
            if key.lower() not in _OWN_TAGS and not key.upper().startswith("_STATISTICS"):
                dst[key] = value

    def write_picture(self, pixels: np.ndarray, picture: Picture) -> None:
        av = _av()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format=self._in_fmt)
        frame = frame.reformat(
            format=self.video.pix_fmt,
            dst_colorspace=self._matrix,
            dst_color_range=self._range,
            interpolation=self._flags,
        )
        shift = round(self.shift / self.info.time_base) if self.shift else 0
        frame.pts = picture.pts - shift
        frame.time_base = self.info.time_base
        if picture.duration:
            frame.duration = picture.duration
        try:
            packets = self.video.encode(frame)
        except av.error.FFmpegError as e:
            raise InputError(
                f"{self.display}: the {self.codec} encoder refused it ({_reason(e)}); try "
                "another --codec"
            ) from None
        self._mux(packets)

    def write_packet(self, packet) -> None:
        if self.shift:
            shift = round(self.shift / packet.time_base)
            if packet.pts is not None:
                packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
        packet = self.others.packet(packet)
        if packet is not None:  # (None: a dropped stream, an empty cue)
            self._mux([packet])

    def _mux(self, packets) -> None:
        av = _av()
        try:
            self.container.mux(packets)
        except av.error.FFmpegError as e:
            raise InputError(
                f"{self.display}: cannot write the output video ({_reason(e)})"
            ) from None

    def close(self) -> None:
        """Flush the encoder and finish the file (the container's index is written here)."""
        av = _av()
        try:
            self._mux(self.video.encode(None))
        finally:
            try:
                self.container.close()
            except av.error.FFmpegError as e:
                raise InputError(
                    f"{self.display}: cannot finish the output video ({_reason(e)})"
                ) from None

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # the file is deleted anyway
            pass
