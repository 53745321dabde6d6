"""`ented serve`: the page in a real browser (Debian's chromium through Playwright), the HTTP
limits and errors, 8 requests at once, hostile file names, the token and the temporary files.

Every server here runs the real pipeline (bundled weights, real detector), loaded once for the
module; the servers listen on a free port of 127.0.0.1. `ENTED_WEB_SCREENSHOTS=docs/img` makes
the browser test save the README's screenshots there.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import EXAMPLES

httpx = pytest.importorskip("httpx", reason="the test extra (httpx) is not installed")
pytest.importorskip("starlette", reason='the web extra is not installed: pip install "ented[web]"')

from ented_cli.web.jobs import JobStore  # noqa: E402
from ented_cli.web.server import ServeRequest, WebServer, bind, load_pipeline  # noqa: E402
from ented_cli.web.uploads import check_image, display_name, unique_names  # noqa: E402

PHOTO, REF = EXAMPLES / "astronaut_degraded.jpg", EXAMPLES / "astronaut.png"


# ----------------------------------------------------------------------------------- servers
@pytest.fixture(scope="module")
def pipeline():
    return load_pipeline(ServeRequest(device="cpu"))


class Served:
    """A WebServer on a free local port, and an HTTP client for it."""

    def __init__(self, pipeline, **options):
        request = ServeRequest(host="127.0.0.1", port=0, device="cpu", **options)
        self.server = WebServer(request, bind("127.0.0.1", 0), pipeline)
        self.server.start()
        self.base = f"http://127.0.0.1:{self.server.port}/"
        self.client = httpx.Client(base_url=self.base, timeout=120)

    @property
    def store(self) -> JobStore:
        return self.server.service.store

    def submit(self, photos=(), refs=(), fidelity="0.5", client=None) -> httpx.Response:
        files = [("photos", _file(p)) for p in photos] + [("refs", _file(r)) for r in refs]
        return (client or self.client).post("api/jobs", files=files, data={"fidelity": fidelity})

    def wait(self, job_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.client.get(f"api/jobs/{job_id}").json()
            if job["state"] in ("done", "failed"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s")

    def restore(self, photos=(), refs=(), fidelity="0.5") -> dict:
        answer = self.submit(photos, refs, fidelity)
        assert answer.status_code == 202, answer.text
        return self.wait(answer.json()["id"])

    def close(self) -> None:
        self.client.close()
        self.server.stop()


def _file(item):
    """A path, or (name, bytes): what httpx sends as one file of the form."""
    if isinstance(item, Path):
        return (item.name, item.read_bytes(), "application/octet-stream")
    name, data = item
    return (name, data, "application/octet-stream")


@pytest.fixture(scope="module")
def served(pipeline):
    s = Served(pipeline)
    yield s
    s.close()


def _png(pixels: np.ndarray) -> bytes:
    return cv2.imencode(".png", pixels)[1].tobytes()


def _blank(w=320, h=240) -> bytes:
    return _png(np.full((h, w, 3), 180, np.uint8))


def _decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


# ------------------------------------------------------------------------------ no model needed
def test_client_file_names_become_one_harmless_component():
    assert display_name("../../etc/passwd.jpg", "x") == "passwd.jpg"
    assert display_name("..\\..\\Windows\\evil.png", "x") == "evil.png"
    assert display_name("..", "photo 1") == "photo 1"
    assert display_name("a\r\nContent-Type: x.jpg", "x") == "a_Content-Type_ x.jpg"
    assert display_name("Großmutter 1952.jpg", "x") == "Großmutter 1952.jpg"
    assert len(display_name("a" * 300 + ".jpeg", "x")) == 80
    assert display_name("a" * 300 + ".jpeg", "x").endswith(".jpeg")
    assert unique_names(["a.jpg", "A.jpg", "a.jpg"]) == ["a.jpg", "A (2).jpg", "a (3).jpg"]


def test_uploads_are_judged_by_content_not_by_name():
    png = PHOTO.read_bytes()
    assert check_image("notes.txt", png, None) == ".jpg"  # a JPEG, whatever it is called
    for data, words in (
        (b"", "empty"),
        (b"%PDF-1.7 a document", "not a photo"),
        (b"GIF89a" + bytes(40), "not a photo"),  # ented cannot write GIF back
        (png[:200], "cannot be read"),
    ):
        with pytest.raises(ValueError, match=words):
            check_image("photo.jpg", data, None)
    with pytest.raises(ValueError, match=r"512×352 pixels .* limit of 0.1 MP"):
        check_image("photo.jpg", png, 100_000)


def test_results_go_when_closed_downloaded_or_left(tmp_path):
    store = JobStore(keep_s=60, max_jobs=8)
    try:
        job = store.create(0.5)
        job.add_file("0-result.jpg", b"x", "a_ented.jpg")
        job.state = "done"
        store.finished(job)
        assert store.sweep() == 0 and store.get(job.id) is job  # within --keep
        store.downloaded(job, "0-result.jpg")  # everything downloaded: a minute's grace
        assert job.expires - time.monotonic() <= 61
        job.expires = time.monotonic() - 1
        assert store.sweep() == 1 and store.get(job.id) is None
        assert not job.folder.exists()
        other = store.create(0.5)
        assert store.remove(other.id) and not other.folder.exists()  # the page said "forget"
    finally:
        store.close()
    assert not store.root.exists()


def test_help_does_not_import_the_web_stack():
    code = (
        "import sys\n"
        "from ented_cli.cli.main import main\n"
        "for args in (['--help'], ['serve', '--help']):\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = {'starlette', 'uvicorn', 'python_multipart', 'torch', 'httpx'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("[]"), out.stdout


def test_a_port_in_use_is_a_one_line_usage_error():
    from ented_cli.errors import UsageError

    taken = bind("127.0.0.1", 0)
    try:
        with pytest.raises(UsageError, match=r"port \d+ is in use.*--port 0"):
            bind("127.0.0.1", taken.getsockname()[1])
    finally:
        taken.close()


# ------------------------------------------------------------------------------ HTTP: the page
@pytest.mark.slow
def test_the_page_is_served_with_nothing_from_elsewhere(served):
    page = served.client.get("")
    assert page.status_code == 200 and "<title>ented" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    # Every script, style sheet and picture the page names is its own.
    for ref in re.findall(r'(?:src|href)="([^"#]+)"', page.text):
        assert ref.startswith("/static/"), ref
        assert served.client.get(ref).status_code == 200
    assert "http" not in served.client.get("static/style.css").text
    assert served.client.get("static/../../pyproject.toml").status_code == 404


@pytest.mark.slow
def test_a_request_for_another_host_or_from_another_site_is_refused(served):
    rebound = served.client.get("api/info", headers={"host": "attacker.example"})
    assert rebound.status_code == 421  # DNS rebinding: a site that points its name here
    page_origin = served.base.rstrip("/")
    own = served.submit([("wall.png", _blank())], client=httpx.Client(base_url=served.base))
    assert own.status_code == 202
    served.wait(own.json()["id"])
    from_page = served.client.post(
        "api/jobs", headers={"origin": page_origin}, files=[("photos", ("w.png", _blank()))]
    )
    assert from_page.status_code == 202
    served.wait(from_page.json()["id"])
    other = served.client.post(
        "api/jobs", headers={"origin": "http://attacker.example"}, files=[("photos", _file(PHOTO))]
    )
    assert other.status_code == 403
    sandboxed = served.client.delete(f"api/jobs/{own.json()['id']}", headers={"origin": "null"})
    assert sandboxed.status_code == 403


# --------------------------------------------------------------------------- HTTP: bad input
@pytest.mark.slow
def test_bad_files_get_one_clear_message_each(served):
    kept = len(served.store)
    answer = served.submit(
        [("holiday.jpg", b"just some text"), ("scan.png", PHOTO.read_bytes()[:300]), PHOTO],
        [("grandma.pdf", b"%PDF-1.4")],
    )
    assert answer.status_code == 400
    errors = answer.json()["errors"]
    assert errors[0].startswith("holiday.jpg: not a photo ented can read")
    assert errors[1].startswith("scan.png: the file looks like an image but cannot be read")
    assert errors[2].startswith("grandma.pdf: not a photo") and "(reference photo)" in errors[2]
    assert len(errors) == 3
    no_photo = served.client.post("api/jobs", data={"fidelity": "0.5"}, files=[("x", b"")])
    assert "at least one photo" in no_photo.json()["error"]
    bad_fidelity = served.submit([PHOTO], fidelity="2")
    assert bad_fidelity.status_code == 400 and "fidelity" in bad_fidelity.json()["error"]
    assert len(served.store) == kept  # nothing refused was kept


@pytest.mark.slow
def test_a_photo_without_a_face_comes_back_as_it_was(served):
    blank = _blank()
    job = served.restore([("wall.png", blank)], [REF])
    (photo,) = job["photos"]
    assert photo["status"] == "no_face" and "No face was found" in photo["message"]
    download = served.client.get(photo["urls"]["result"])
    assert download.content == blank  # byte for byte
    assert 'filename="wall_ented.png"' in download.headers["content-disposition"]


@pytest.mark.slow
def test_a_reference_without_a_face_fails_the_request_and_names_it(served):
    job = served.restore([PHOTO], [("grandma.png", _blank())])
    assert job["state"] == "failed" and job["photos"] == []
    assert job["error"].startswith("grandma.png: no face found in this reference photo")


@pytest.mark.slow
def test_uploads_above_the_limits_are_refused(pipeline):
    small = Served(pipeline, max_upload_mb=1, max_pixels=100_000)
    try:
        big = ("big.png", np.random.default_rng(0).bytes(1_200_000))
        answer = small.submit([big])
        assert answer.status_code == 413 and "limit of 1 MB" in answer.json()["error"]

        def stream():  # no Content-Length: counted as it arrives
            boundary = b"--b\r\n"
            yield (
                boundary
                + b'Content-Disposition: form-data; name="photos"; filename="x.png"\r\n\r\n'
            )
            for _ in range(40):
                yield bytes(64 * 1024)
            yield b"\r\n--b--\r\n"

        chunked = small.client.post(
            "api/jobs",
            content=stream(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert chunked.status_code == 413
        pixels = small.submit([PHOTO])  # 512 × 352 = 0.18 MP
        assert pixels.status_code == 400 and "limit of 0.1 MP" in pixels.json()["error"]
        assert len(small.store) == 0  # refused uploads leave nothing behind
        assert list(small.store.root.iterdir()) == []
    finally:
        small.close()


@pytest.mark.slow
def test_a_full_queue_answers_busy_at_once(pipeline):
    one = Served(pipeline, queue=1)
    try:
        # The first keeps the model busy for a second or more; the next ones find it taken.
        blank = ("wall.png", _blank())
        answers = [one.submit([PHOTO], [REF]), one.submit([blank]), one.submit([blank])]
        codes = [a.status_code for a in answers]
        assert codes[0] == 202 and 503 in codes, codes
        busy = next(a for a in answers if a.status_code == 503)
        assert "busy" in busy.json()["error"] and busy.headers["retry-after"] == "30"
        for a in answers:
            if a.status_code == 202:
                assert one.wait(a.json()["id"])["state"] == "done"
    finally:
        one.close()


# ------------------------------------------------------------------------ HTTP: many at once
@pytest.mark.slow
def test_eight_requests_at_once_each_get_their_own_result(served):
    face = cv2.imread(str(EXAMPLES / "grace_hopper.jpg"))
    photos = []
    for i in range(8):  # eight sizes: a result of the wrong request would show at once
        w = 200 + 24 * i
        pixels = cv2.resize(face, (w, round(w * face.shape[0] / face.shape[1])))
        if i % 2:  # every other one without a face: it must come back byte for byte
            pixels = np.full_like(pixels, 40 + 20 * i)
        photos.append((f"photo-{i}.png", _png(pixels)))
    refs = [[REF], [], [], [REF]] * 2  # some with a reference (of someone else)
    answers: list = [None] * 8
    start = threading.Barrier(8)

    def send(i):
        with httpx.Client(base_url=served.base, timeout=120) as client:
            start.wait()
            answers[i] = served.submit([photos[i]], refs[i], client=client)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a.status_code for a in answers] == [202] * 8
    for i, answer in enumerate(answers):
        job = served.wait(answer.json()["id"])
        (photo,) = job["photos"]
        assert photo["name"] == f"photo-{i}.png"
        result = served.client.get(photo["urls"]["result"]).content
        if i % 2:
            assert photo["status"] == "no_face" and result == photos[i][1]
            continue
        (f,) = photo["faces"]
        # Restored, or left as it was by the do-no-harm guard, which then says why.
        assert photo["status"] == "restored" or (
            photo["status"] == "unchanged" and f["guard_reason"] == "already_sharp"
        ), (photo["status"], f["guard_reason"])
        assert f["mode"] == "blind"
        assert f["reason"] == ("below_threshold" if refs[i] else "no_references")
        assert _decode(result).shape == _decode(photos[i][1]).shape


# ------------------------------------------------------------------------- hostile file names
@pytest.mark.slow
def test_hostile_file_names_never_reach_the_file_system(served, tmp_path):
    data = _blank(64, 64)
    names = ["../../../../tmp/ented-evil.png", "..\\..\\ented-evil.png", "/etc/passwd", ".."]
    job = served.restore([(n, data) for n in names])
    shown = [p["name"] for p in job["photos"]]
    assert shown == ["ented-evil.png", "ented-evil (2).png", "passwd", "photo 4"]
    zipped = served.client.get(job["zip"])
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as archive:
        entries = archive.namelist()
        archive.extractall(tmp_path / "unzipped")
    assert sorted(entries) == sorted(
        [
            "ented-evil_ented.png",
            "ented-evil (2)_ented.png",
            "passwd_ented.png",
            "photo 4_ented.png",
        ]
    )
    assert all("/" not in e and "\\" not in e and not e.startswith(".") for e in entries)
    assert sorted(p.name for p in (tmp_path / "unzipped").iterdir()) == sorted(entries)
    assert not Path("/tmp/ented-evil.png").exists() and not Path("/etc/passwd_ented.png").exists()
    for path in served.store.root.rglob("*"):  # only names the server made
        assert re.fullmatch(r"[\w-]+|\d+-[\w-]+\.\w+|all\.zip", path.name), path
    # A name the server did not make is not a file, however it is spelt.
    for probe in ("..%2F..%2Fetc%2Fpasswd", "photo-0.png", "%2e%2e"):
        assert served.client.get(f"api/jobs/{job['id']}/files/{probe}").status_code == 404


# -------------------------------------------------------------------------------------- token
@pytest.mark.slow
def test_with_a_token_only_the_printed_link_opens_the_page(pipeline):
    locked = Served(pipeline, token="family-secret-1952")
    try:
        bare = httpx.Client(base_url=locked.base)
        assert bare.get("").status_code == 401
        assert bare.get("api/info").status_code == 401
        assert bare.get("?token=guess-guess-guess").status_code == 401
        opened = bare.get("?token=family-secret-1952")
        assert opened.status_code == 303 and "HttpOnly" in opened.headers["set-cookie"]
        assert bare.get("api/info").status_code == 200  # the cookie carries it from now on
        assert locked.server.url.endswith("/?token=family-secret-1952")
    finally:
        locked.close()


# ----------------------------------------------------------------------------- the command
@pytest.mark.slow
def test_ented_serve_prints_its_link_and_cleans_up_on_ctrl_c(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "OMP_WAIT_POLICY": "PASSIVE"}
    cmd = [sys.executable, "-m", "ented_cli", "serve", "--port", "0", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line).group(0)
        assert httpx.get(url + "api/info").json()["max_photos"] >= 1
        assert len(list(tmp_path.glob("ented-serve-*"))) == 1
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert list(tmp_path.glob("ented-serve-*")) == []  # every temporary file went with it


# ---------------------------------------------------------------------------- the real browser
def _chromium() -> str | None:
    return (
        os.environ.get("ENTED_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    executable = _chromium()
    if executable is None:
        pytest.skip("no chromium on this machine (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable)
        yield chromium
        chromium.close()


def _drop(page, zone: str, path: Path, mime: str) -> None:
    """Drop a file on a zone as a person dragging it from a folder would."""
    transfer = page.evaluate_handle(
        """([name, bytes, mime]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name, { type: mime }));
            return transfer;
        }""",
        [path.name, list(path.read_bytes()), mime],
    )
    page.dispatch_event(zone, "drop", {"dataTransfer": transfer})


@pytest.mark.slow
def test_a_person_restores_a_photo_in_the_page(served, browser, pipeline, tmp_path):
    from ented_cli.imaging.write import encode_image
    from ented_cli.pipeline.library import ReferenceLibrary
    from ented_cli.pipeline.references import ReferenceGallery

    shots = os.environ.get("ENTED_WEB_SCREENSHOTS")
    page = browser.new_page(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    requested = []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(served.base)

    # A file that is not a photo, then a damaged "photo": each is named in a clear message.
    page.set_input_files("#photos-input", files=[_fake("notes.txt", "text/plain")])
    assert "notes.txt: not a photo" in page.inner_text("#errors")
    page.set_input_files("#photos-input", files=[_fake("broken.jpg", "image/jpeg")])
    page.click("#go")
    page.wait_for_selector("#errors li")
    assert "broken.jpg: not a photo ented can read" in page.inner_text("#errors")
    page.click("#photos-list .remove")

    # The photo by the file chooser, the reference dropped on its zone; fidelity by keyboard.
    page.set_input_files("#photos-input", str(PHOTO))
    _drop(page, ".drop[data-kind=refs]", REF, "image/png")
    assert "astronaut.png" in page.inner_text("#refs-list")
    page.focus("#fidelity")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    assert page.inner_text("#fidelity-value") == "0.40"
    page.focus("#go")
    page.keyboard.press("Enter")
    page.wait_for_selector("#results article.result", timeout=180_000)

    card = page.locator("article.result")
    assert "1 face restored, 1 with a reference photo" in card.inner_text()
    assert "astronaut" in page.inner_text(".box.matched")
    assert "Paired with astronaut.png (similarity 0.9" in page.inner_text(".face")

    # The before/after line follows the keyboard and the pointer.
    compare = card.locator(".compare").first
    divider = compare.locator(".divider")
    divider.focus()
    page.keyboard.press("Home")
    assert compare.evaluate("e => e.style.getPropertyValue('--pos')") == "0%"
    box = compare.bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] / 2)
    assert 70 <= int(divider.input_value()) <= 80
    if shots:
        page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
        _screenshot(page, Path(shots) / "serve-desktop.png")

    # The download is the restored photo: what the pipeline makes of it at fidelity 0.4.
    with page.expect_download() as info:
        card.locator("a.button").click()
    download = info.value
    assert download.suggested_filename == "astronaut_degraded_ented.jpg"
    got = _decode(Path(download.path()).read_bytes())
    library = ReferenceLibrary(pipeline.detector, pipeline.encoder, pipeline.restorer, None)
    gallery = ReferenceGallery([library.face("astronaut", REF)])
    result = pipeline(PHOTO, gallery, fidelity=0.4)
    expected = _decode(encode_image(result.image, ".jpg", 95))
    before = cv2.imread(str(PHOTO))
    assert got.shape == before.shape
    assert np.abs(got.astype(int) - expected).mean() < 1.0
    x0, y0, x1, y1 = (round(v) for v in result.report.faces[0].box)
    assert np.abs(got[y0:y1, x0:x1].astype(int) - before[y0:y1, x0:x1]).mean() > 3

    with page.expect_download() as info:
        page.click("#zip")
    with zipfile.ZipFile(info.value.path()) as archive:
        assert archive.namelist() == ["astronaut_degraded_ented.jpg"]
        assert archive.read("astronaut_degraded_ented.jpg") == Path(download.path()).read_bytes()

    # A phone: one column, nothing wider than the screen.
    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    if shots:
        _screenshot(page, Path(shots) / "serve-phone.png")

    # Nothing was fetched from anywhere but the server (blob: the photos chosen, shown locally).
    assert requested and all(u.removeprefix("blob:").startswith(served.base) for u in requested)
    page.close()


def _screenshot(page, path: Path) -> None:
    """The whole page as a 256-colour PNG (a README picture, well under 300 KB)."""
    from PIL import Image

    shot = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    shot.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )


def _fake(name: str, mime: str) -> dict:
    return {"name": name, "mimeType": mime, "buffer": b"this is not a picture"}
