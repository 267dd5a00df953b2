"""The exposed app against a hostile caller (issue #27): uploads are never served back as a page,
uploads are capped, Gradio's temp copies are cleaned, and /finetune-start does not say which
server paths exist. One `python launch.py` for the module (tests/studio_app.py)."""

import io

import httpx
import pytest
from PIL import Image

from studio_app import start_app

UPLOAD_CAP_MB = 1
INLINE_SAFE = ("image/png", "image/jpeg", "image/gif", "image/webp", "video/")


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    app = start_app(tmp_path_factory.mktemp("hardening"), "--max-upload-mb", str(UPLOAD_CAP_MB))
    yield app
    app.stop()


def upload(studio, name: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{studio.url.rstrip('/')}/gradio_api/upload", files={"files": (name, data)}, timeout=60)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


SCRIPT = b'<script>document.title="owned"</script>'
UPLOADS = {
    "p.html": b"<html><body>" + SCRIPT + b"</body></html>",
    "p.svg": b'<svg xmlns="http://www.w3.org/2000/svg">' + SCRIPT + b"</svg>",
    "p.xhtml": b'<html xmlns="http://www.w3.org/1999/xhtml">' + SCRIPT + b"</html>",
    "p.js": b'document.title="owned"',
    "p.png": png_bytes(),
}


def test_uploads_come_back_as_attachments_or_images_never_as_pages(studio):
    """#27.1: every served upload is an attachment or an image/video type (was: an uploaded .html
    or .svg came back inline as text/html / image/svg+xml, running its script in the app's origin)."""
    base = studio.url.rstrip("/")
    served = {}
    for name, data in UPLOADS.items():
        response = upload(studio, name, data)
        assert response.status_code == 200, response.text
        (path,) = response.json()
        got = httpx.get(f"{base}/gradio_api/file={path}", timeout=30)
        assert got.status_code == 200 and got.content == data, name
        kind = got.headers.get("content-type", "")
        disposition = got.headers.get("content-disposition", "")
        served[name] = (kind, disposition)
        assert disposition.startswith("attachment") or kind.startswith(INLINE_SAFE), (name, kind, disposition)
    assert served["p.png"][0] == "image/png"  # images still show inline


def test_uploads_over_the_cap_are_refused(studio):
    """#27.6: launch.py --max-upload-mb (default 50) caps uploads (was: 100 MB accepted)."""
    too_big = upload(studio, "big.png", b"\0" * (UPLOAD_CAP_MB * 1024 * 1024 + 1024))
    assert too_big.status_code == 413, too_big.text
    assert upload(studio, "small.png", png_bytes()).status_code == 200


def test_gradio_temp_copies_are_cleaned_and_the_default_cap_is_set(tmp_path):
    """#27.6: the app's Blocks deletes its temp copies (Gradio's delete_cache); launch.py caps
    uploads by default."""
    from app.config import AppConfig
    from app.ui import TEMP_CACHE_CLEANUP_S, allowed_paths, build_app
    from launch import DEFAULT_MAX_UPLOAD_MB, parse_args

    config = AppConfig(output_dir=tmp_path / "out", runs_dir=tmp_path / "runs", ckpt_dir=tmp_path / "ckpts",
                       preset="tiny-random")
    demo, _ = build_app(config)
    frequency, age = demo.delete_cache
    assert (frequency, age) == TEMP_CACHE_CLEANUP_S and 0 < frequency <= 3600 and 0 < age <= 7 * 24 * 3600
    assert allowed_paths(config) == [str(config.output_dir)]
    assert parse_args([]).max_upload_mb == DEFAULT_MAX_UPLOAD_MB < 100


def test_finetune_start_does_not_tell_which_server_paths_exist(studio, tmp_path):
    """#27.6: a dataset outside the runs/data folders (or uploads) is refused with the same words
    whether it exists or not (was: "/etc/passwd is not a .csv file" vs "does not exist")."""
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(studio.url, verbose=False, download_files=str(tmp_path))
    messages = {}
    for path in ("/etc/passwd", "/etc", "/etc/no-such-file.csv", "../../../etc/hostname"):
        with pytest.raises(AppError) as err:
            client.predict(run_name="probe", dataset=path, preset="tiny-random", training_settings="tiny",
                           method="LoRA", lora_rank=8, steps=1, lr=1e-3, api_name="/finetune-start")
        messages[path] = str(err.value).replace(repr(path), "PATH")
    assert len(set(messages.values())) == 1, messages
    message = messages["/etc/passwd"]
    assert "outside the folders the app trains from" in message and str(studio.runs_dir) in message
    assert not (studio.runs_dir / "probe").exists()
