"""`generate --refine-prompt --motion-score dynamic` against a local OpenAI-compatible stub."""

import json
import logging
import os

import pytest

from conftest import run_cli
from opensora.cli import main
from openai_stub_server import OpenAIStubServer, StubReply

SECRET = "sk-test-DO-NOT-LEAK-7d1f0c"
REFINED = "a small red fox trots through deep fresh snow at dawn, soft golden light"


@pytest.fixture
def stub(monkeypatch):
    with OpenAIStubServer() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        yield server


def generate(out, *extra):
    return main(["generate", "--preset", "tiny-random", "--prompt", "a red fox in snow", "--num-frames", "5",
                 "--num-steps", "1", "--seed", "3", "--output-dir", str(out), *extra])


def test_refined_prompt_and_dynamic_score_used_and_recorded(stub, tmp_path, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    stub.queue(StubReply.text(REFINED), StubReply.text('{"motion_score": 9}'))
    assert generate(tmp_path, "--refine-prompt", "--motion-score", "dynamic", "--refine-model", "local-llm") == 0
    sidecar_text = (tmp_path / "0000.json").read_text()
    sidecar = json.loads(sidecar_text)
    assert sidecar["model_prompt"] == f"{REFINED}. 8 FPS. 9 motion score."
    assert sidecar["prompt_handling"]["refined"] == REFINED and sidecar["motion_score"] == 9
    assert stub.chat_requests[0].body["model"] == "local-llm"
    assert "a red fox in snow" in json.dumps(stub.chat_requests[0].body["messages"][-1])
    out = capsys.readouterr()
    everything = [sidecar_text, (tmp_path / "results.csv").read_text(), out.out, out.err, caplog.text]
    assert not any(SECRET in text for text in everything)


def test_server_failure_still_generates_with_original_prompt(stub, tmp_path, capsys):
    stub.queue(StubReply.error(401, f"Incorrect API key provided: {SECRET}", "invalid_api_key"))
    assert generate(tmp_path, "--refine-prompt") == 0
    sidecar = json.loads((tmp_path / "0000.json").read_text())
    assert sidecar["model_prompt"] == "a red fox in snow. 8 FPS. 4 motion score."
    err = capsys.readouterr().err
    assert "notice:" in err and "401" in err and SECRET not in err


def test_offline_refiner_without_endpoint(monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert generate(tmp_path / "a", "--refine-prompt") == 0
    assert generate(tmp_path / "b", "--refine-prompt") == 0
    first = json.loads((tmp_path / "a" / "0000.json").read_text())
    second = json.loads((tmp_path / "b" / "0000.json").read_text())
    assert first["prompt_handling"]["refiner"] == "offline"
    assert first["model_prompt"] == second["model_prompt"] != "a red fox in snow. 8 FPS. 4 motion score."
    assert first["model_prompt"].startswith("a red fox in snow")


def test_key_not_in_subprocess_output(stub, tmp_path):
    stub.queue(StubReply.text(REFINED))
    env = {**os.environ, "OPENAI_BASE_URL": stub.base_url, "OPENAI_API_KEY": SECRET}
    proc = run_cli("generate", "--preset", "tiny-random", "--prompt", "a fox", "--num-frames", "5", "--num-steps", "1",
                   "--refine-prompt", "--output-dir", str(tmp_path), env=env)
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr + (tmp_path / "0000.json").read_text()
    assert json.loads((tmp_path / "0000.json").read_text())["prompt_handling"]["refined"] == REFINED
