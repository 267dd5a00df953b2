"""Stage caption against a local OpenAI-compatible stub on 127.0.0.1 that records every request:
the frames go as JPEG data URLs after the instruction, 429 is retried, failures leave the row
uncaptioned with the reason (and are counted), captioned rows are not asked again."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from PIL import Image

from openai_stub_server import OpenAIStubServer, StubReply
from test_curation_media import FPS
from opensora.io.video import write_video
from training.curation import caption
from training.curation.caption import CaptionConfig, skip_reason
from training.curation.runner import run_stage
from training.curation.table import read_csv

RED, BLUE = (220, 30, 30), (30, 40, 220)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("caption")
    for name, colour in (("red", RED), ("blue", BLUE)):
        write_video(root / f"{name}.mp4", np.full((12, 48, 80, 3), colour, np.uint8), FPS)
    return root


def listing(clips, tmp_path, texts=("", "")) -> str:
    path = tmp_path / "in.csv"
    path.write_text("path,text,num_frames\n" + "".join(
        f"{clips / name}.mp4,{text},12\n" for name, text in zip(("red", "blue"), texts)))
    return path


def config(stub, **overrides) -> CaptionConfig:
    return CaptionConfig(**{"base_url": stub.base_url, "model": "stub-vision", "frames": 2, "frame_size": 64,
                            "backoff_s": 0.01, "retries": 2, "timeout_s": 10, **overrides})


def sent_images(request) -> list[Image.Image]:
    parts = request.body["messages"][0]["content"][1:]
    images = []
    for part in parts:
        assert part["type"] == "image_url"
        header, data = part["image_url"]["url"].split(",", 1)
        assert header == "data:image/jpeg;base64"
        images.append(Image.open(io.BytesIO(base64.b64decode(data))))
    return images


def test_frames_go_as_images_after_the_instruction_and_the_answer_is_the_caption(clips, tmp_path):
    with OpenAIStubServer() as stub:
        stub.queue(StubReply.text("A red  field.\nNothing moves."), StubReply.text("A blue wall."))
        summary = run_stage(caption.STAGE, config(stub, instruction="Describe the clip."), listing(clips, tmp_path),
                            tmp_path / "out.csv", progress=False)
        requests = stub.chat_requests
    assert len(requests) == 2 and summary.kept == 2
    for request, colour in zip(requests, (RED, BLUE)):
        body = request.body
        assert body["model"] == "stub-vision"
        assert body["messages"][0]["content"][0] == {"type": "text", "text": "Describe the clip."}
        images = sent_images(request)
        assert len(images) == 2
        for image in images:
            assert image.format == "JPEG" and max(image.size) == 64  # shrunk to --caption-frame-size
            assert np.abs(np.asarray(image, np.float32).mean(axis=(0, 1)) - colour).max() < 12
    rows = read_csv(tmp_path / "out.csv")[1]
    assert [r["text"] for r in rows] == ["A red field. Nothing moves.", "A blue wall."]
    assert [r["caption_error"] for r in rows] == ["", ""]


def test_a_429_is_retried_and_the_retry_sends_the_same_request(clips, tmp_path):
    with OpenAIStubServer() as stub:
        stub.queue(StubReply.error(429, "slow down"), StubReply.text("red"), StubReply.text("blue"))
        run_stage(caption.STAGE, config(stub), listing(clips, tmp_path), tmp_path / "out.csv", progress=False)
        requests = stub.chat_requests
    assert len(requests) == 3 and requests[0].body == requests[1].body
    assert [r["text"] for r in read_csv(tmp_path / "out.csv")[1]] == ["red", "blue"]


def test_a_failure_leaves_the_row_uncaptioned_with_the_reason_and_a_rerun_asks_only_for_it(clips, tmp_path):
    with OpenAIStubServer() as stub:
        stub.queue(*[StubReply.error(429, "quota")] * 3, StubReply.text("blue"))  # 1 try + 2 retries fail
        summary = run_stage(caption.STAGE, config(stub), listing(clips, tmp_path), tmp_path / "first.csv",
                            progress=False)
        assert len(stub.chat_requests) == 4
        assert summary.flagged == {"caption failed": 1} and summary.kept == 1
        red, blue = read_csv(tmp_path / "first.csv")[1]
        assert red["text"] == "" and "429" in red["caption_error"] and stub.base_url.split("//")[1] in red["caption_error"]
        assert blue["text"] == "blue"

        stub.queue(StubReply.text("red at last"))
        again = run_stage(caption.STAGE, config(stub), tmp_path / "first.csv", tmp_path / "second.csv", progress=False)
        assert len(stub.chat_requests) == 5  # only the uncaptioned row was sent
    assert again.counts == {"already captioned": 1}
    assert [r["text"] for r in read_csv(tmp_path / "second.csv")[1]] == ["red at last", "blue"]


def test_rate_limit_spaces_the_requests(clips, tmp_path):
    with OpenAIStubServer() as stub:
        started = time.monotonic()
        run_stage(caption.STAGE, config(stub, rate_limit=4.0), listing(clips, tmp_path), tmp_path / "out.csv",
                  progress=False)
        elapsed = time.monotonic() - started
    assert elapsed >= 0.25  # two requests at 4 per second: the second waits 0.25 s


def test_without_a_server_the_stage_is_skipped_with_a_notice(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert "no captioning server" in skip_reason(CaptionConfig())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    assert skip_reason(CaptionConfig()) is None
