"""Prompt refinement and motion score against a local OpenAI-compatible stub (never real OpenAI)."""

from __future__ import annotations

import argparse
import base64
import io
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from opensora.commands import refine as refine_command
from opensora.errors import UserError
from opensora.refine import (
    PreparedPrompt,
    RefineSettings,
    add_fps_suffix,
    add_motion_suffix,
    normalize_to_shapes_world,
    offline_refine,
    parse_motion_score,
    prepare_prompt,
)
from opensora.refine.instructions import SYSTEM_I2V, SYSTEM_T2I, SYSTEM_T2V
from opensora.refine.motion import SYSTEM_MOTION

try:
    from tests.openai_stub_server import OpenAIStubServer, StubReply
except ImportError:  # pytest put tests/ itself on sys.path
    from openai_stub_server import OpenAIStubServer, StubReply  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-test-SECRET-d1st1nct1ve-4242"
REFINED = "a red fox trots through deep fresh snow in a quiet pine forest, breath steaming."
IDEA = "a red fox running through fresh snow"


@pytest.fixture(autouse=True)
def _no_openai_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests must never pick up a developer's real endpoint or key.
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def stub():
    with OpenAIStubServer() as server:
        yield server


def settings_for(server: OpenAIStubServer, **overrides) -> RefineSettings:
    values = dict(base_url=server.base_url, api_key=SECRET, timeout_s=5.0, backoff_s=0.01)
    values.update(overrides)
    return RefineSettings(**values)


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def tiny_png(path: Path) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


# --- suffixes (text_conditioning_spec.md §2) ------------------------------------------------


def test_official_suffix_example():
    assert add_motion_suffix(add_fps_suffix(IDEA, 24), 4) == (
        "a red fox running through fresh snow. 24 FPS. 4 motion score."
    )


def test_fps_suffix_rules():
    assert add_fps_suffix("  a cat.  ", 16) == "a cat. 16 FPS."
    assert add_fps_suffix("a cat. 30 FPS.", 24) == "a cat. 30 FPS."  # never doubled
    assert add_fps_suffix("a cat. 30 FPS", 24) == "a cat. 30 FPS."  # only the "." is added
    assert add_motion_suffix("a cat. 24 FPS. 6 motion score.", 4).count("motion score") == 1


# --- requests to the server -------------------------------------------------------------------


def test_t2v_request_and_refined_prompt_used(stub):
    stub.queue(StubReply.text(f'  "{REFINED}"\n'))
    prepared = prepare_prompt(IDEA, refine=True, motion_score=4, settings=settings_for(stub))

    (request,) = stub.chat_requests
    body = request.body
    assert request.path == "/v1/chat/completions"
    assert body["model"] == "gpt-4o"
    assert body["temperature"] == pytest.approx(0.01)
    assert body["top_p"] == pytest.approx(0.7)
    assert body["max_tokens"] == 250
    messages = body["messages"]
    assert messages[0] == {"role": "system", "content": SYSTEM_T2V}
    few_shots = messages[1:-1]
    assert len(few_shots) >= 4 and len(few_shots) % 2 == 0
    assert [m["role"] for m in few_shots] == ["user", "assistant"] * (len(few_shots) // 2)
    assert messages[-1]["role"] == "user"
    assert f'" {IDEA} "' in messages[-1]["content"]
    assert "English" in messages[-1]["content"]

    assert prepared.refined == REFINED  # quotes and whitespace stripped
    assert prepared.model_text == f"{REFINED} 24 FPS. 4 motion score."
    assert prepared.motion_source == "fixed"
    assert prepared.notices == []
    sidecar = prepared.to_sidecar()
    assert sidecar["refined"] == REFINED and sidecar["original"] == IDEA
    assert sidecar["refine_endpoint"] == stub.base_url and sidecar["refine_model"] == "gpt-4o"
    json.dumps(sidecar)  # JSON-ready


def test_t2i_mode_custom_model_and_keep_language(stub):
    stub.queue(StubReply.text("un renard roux dans la neige"))
    settings = settings_for(stub, model="local-llm", language="keep")
    prepared = prepare_prompt("un renard", refine=True, motion_score=4, mode="t2i", settings=settings)
    body = stub.chat_requests[0].body
    assert body["model"] == "local-llm"
    assert body["messages"][0]["content"] == SYSTEM_T2I
    assert "same language" in body["messages"][-1]["content"]
    assert prepared.text == "un renard roux dans la neige"


def test_i2v_sends_image_as_data_url(stub, tmp_path):
    image = tmp_path / "first_frame.png"
    data = tiny_png(image)
    stub.queue(StubReply.text("a close-up of a red square slowly turning"))
    prepared = prepare_prompt(
        "it turns", refine=True, motion_score=4, mode="i2v", ref_image=str(image),
        settings=settings_for(stub),
    )
    messages = stub.chat_requests[0].body["messages"]
    assert messages[0]["content"] == SYSTEM_I2V
    parts = messages[-1]["content"]
    text_part = next(p for p in parts if p["type"] == "text")
    image_part = next(p for p in parts if p["type"] == "image_url")
    assert '" it turns "' in text_part["text"]
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == data
    assert prepared.refined == "a close-up of a red square slowly turning"


@pytest.mark.parametrize("bad", ["missing.png", "empty.png", "notes.txt"])
def test_i2v_bad_reference_image_is_user_error(stub, tmp_path, bad):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match="reference image"):
        prepare_prompt("x", refine=True, motion_score=4, mode="i2v",
                       ref_image=str(tmp_path / bad), settings=settings_for(stub))
    assert stub.chat_requests == []


def test_local_server_without_key_gets_placeholder(stub):
    stub.queue(StubReply.text(REFINED))
    prepared = prepare_prompt(IDEA, refine=True, motion_score=4,
                              settings=settings_for(stub, api_key=None))
    assert stub.chat_requests[0].headers["authorization"] == "Bearer not-needed"
    assert prepared.refined == REFINED


def test_settings_from_env_and_flags(monkeypatch):
    assert not RefineSettings.from_env().configured
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
    assert RefineSettings.from_env().base_url == "http://127.0.0.1:1/v1"
    assert RefineSettings.from_env(base_url="http://h:2/v1").base_url == "http://h:2/v1"
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    settings = RefineSettings.from_env(model="m", timeout_s=3)
    assert settings.configured and settings.model == "m" and settings.timeout_s == 3.0
    assert SECRET not in repr(settings)
    with pytest.raises(UserError, match="keep"):
        RefineSettings.from_env(language="klingon")
    with pytest.raises(UserError, match="http://127.0.0.1:8000/v1"):
        RefineSettings.from_env(base_url="localhost:8000")


# --- the key never leaks -------------------------------------------------------------------


def test_key_sent_but_never_logged_or_recorded(stub, monkeypatch, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    # A real 401 quotes the key back; ours must not pass it on.
    stub.queue(
        StubReply.text(REFINED),
        StubReply.text('{"motion_score": 6}'),
        StubReply.error(401, f"Incorrect API key provided: {SECRET}", "invalid_api_key"),
    )
    settings = RefineSettings.from_env(backoff_s=0.01)
    ok = prepare_prompt(IDEA, refine=True, motion_score="dynamic", settings=settings)
    failed = prepare_prompt(IDEA, refine=True, motion_score="dynamic", settings=settings)
    for notice in failed.notices:
        print(notice, file=sys.stderr)

    assert all(r.headers["authorization"] == f"Bearer {SECRET}" for r in stub.chat_requests)
    assert ok.motion_score == 6 and failed.refined is None
    out = capsys.readouterr()
    texts = [caplog.text, out.out, out.err, repr(settings), repr(ok), repr(failed),
             json.dumps(ok.to_sidecar()), json.dumps(failed.to_sidecar())]
    assert not any(SECRET in text for text in texts)
    assert "401" in failed.notices[0]


# --- error cases: each has its own notice and generation goes on ------------------------------

ERROR_CASES = {
    "unauthorized": (StubReply.error(401, "bad key", "invalid_api_key"), "rejected the API key"),
    "unknown_model": (
        StubReply.error(404, "The model `gpt-4o` does not exist.", "model_not_found"),
        "does not know the model 'gpt-4o'",
    ),
    "wrong_path": (StubReply.error(404, "no such route"), "usually ends in /v1"),
    "bad_request": (StubReply.error(400, "max_tokens too large"), "refused the request (400)"),
    "server_error": (StubReply.error(500, "boom"), "answered with an error (500)"),
    "malformed_json": (StubReply.malformed(), "malformed answer"),
    "no_choices": (StubReply(raw_body=b'{"id": "x"}'), "malformed answer (no choices)"),
    "empty_message": (StubReply.text("   "), "malformed answer (empty message)"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_server_errors_fall_back_to_original(stub, case):
    reply, expected = ERROR_CASES[case]
    stub.set_default(reply)
    stub.set_models(["llama3", "qwen2-vl"])
    prepared = prepare_prompt(IDEA, refine=True, motion_score=4, settings=settings_for(stub))
    assert prepared.refined is None
    assert prepared.model_text == f"{IDEA}. 24 FPS. 4 motion score."
    (notice,) = prepared.notices
    assert expected in notice and "using the original prompt" in notice
    assert stub.base_url in notice or case == "unknown_model" and "127.0.0.1" in notice
    assert len(stub.chat_requests) == 1  # no retry for these
    if case == "unknown_model":
        assert "it serves: llama3, qwen2-vl" in notice and "--refine-model" in notice


def test_rate_limit_retried_once_then_succeeds(stub):
    stub.queue(StubReply.error(429, "slow down"), StubReply.text(REFINED))
    prepared = prepare_prompt(IDEA, refine=True, motion_score=4, settings=settings_for(stub))
    assert len(stub.chat_requests) == 2
    assert prepared.refined == REFINED and prepared.notices == []


def test_rate_limit_twice_gives_notice(stub):
    stub.set_default(StubReply.error(429, "slow down"))
    prepared = prepare_prompt(IDEA, refine=True, motion_score=4, settings=settings_for(stub))
    assert len(stub.chat_requests) == 2
    assert "rate limiting" in prepared.notices[0] and prepared.refined is None


def test_timeout_retried_then_notice(stub):
    stub.set_default(StubReply.slow(2.0))
    prepared = prepare_prompt(IDEA, refine=True, motion_score=4,
                              settings=settings_for(stub, timeout_s=0.2))
    assert len(stub.chat_requests) == 2
    assert "no answer from" in prepared.notices[0] and "0.2 s" in prepared.notices[0]
    assert prepared.model_text.startswith(IDEA)


def test_unreachable_server():
    url = closed_port_url()
    settings = RefineSettings(base_url=url, api_key=SECRET, backoff_s=0.01)
    prepared = prepare_prompt(IDEA, refine=True, motion_score="dynamic", settings=settings)
    assert prepared.refined is None
    assert f"cannot reach the refinement server at {url}" in prepared.notices[0]
    # The motion request is skipped: the same endpoint just failed.
    assert prepared.motion_score == 4 and prepared.motion_source == "fallback"
    assert "skipped" in prepared.notices[1]


def test_official_endpoint_without_key_is_reported_without_network():
    settings = RefineSettings(base_url="https://api.openai.com/v1", api_key=None)
    prepared = prepare_prompt(IDEA, refine=True, motion_score=4, settings=settings)
    assert "no API key for https://api.openai.com/v1" in prepared.notices[0]
    assert prepared.refined is None


# --- dynamic motion score ----------------------------------------------------------------------


@pytest.mark.parametrize("answer", ['{"motion_score": 7}', "7 motion score", "7", " 7 motion score. "])
def test_dynamic_motion_score_parsed(stub, answer):
    stub.queue(StubReply.text(REFINED), StubReply.text(answer))
    prepared = prepare_prompt(IDEA, refine=True, motion_score="dynamic", settings=settings_for(stub))
    assert (prepared.motion_score, prepared.motion_source) == (7, "dynamic")
    assert prepared.model_text == f"{REFINED} 24 FPS. 7 motion score."
    motion_request = stub.chat_requests[1].body
    assert motion_request["max_tokens"] == 100
    assert motion_request["messages"] == [
        {"role": "system", "content": SYSTEM_MOTION},
        {"role": "user", "content": REFINED},
    ]


@pytest.mark.parametrize("answer", ["16 motion score", '{"motion_score": 0}', "seven", "about 5", "{"])
def test_bad_motion_answer_falls_back_to_4(stub, answer):
    stub.queue(StubReply.text(answer))
    prepared = prepare_prompt(IDEA, refine=False, motion_score="dynamic", settings=settings_for(stub))
    assert (prepared.motion_score, prepared.motion_source) == (4, "fallback")
    assert "not a score 1-15" in prepared.notices[0]
    assert prepared.model_text == f"{IDEA}. 24 FPS. 4 motion score."


def test_motion_score_parser():
    assert parse_motion_score("```json\n{\"motion_score\": 3}\n```") == 3
    assert parse_motion_score('{"motion_score": "12"}') == 12
    assert parse_motion_score('{"motion_score": 3.5}') is None
    assert parse_motion_score('{"motion_score": true}') is None
    assert parse_motion_score('{"score": 3}') is None
    assert parse_motion_score("") is None


@pytest.mark.parametrize("value", [0, 16, "fast", 4.5, True, "", None])
def test_invalid_motion_setting_is_user_error(value):
    with pytest.raises(UserError, match=r"1-15 or 'dynamic'") as err:
        prepare_prompt(IDEA, refine=False, motion_score=value)  # type: ignore[arg-type]
    assert repr(value) in str(err.value)


def test_fixed_motion_string_and_empty_prompt():
    assert prepare_prompt(IDEA, refine=False, motion_score=" 9 ").motion_score == 9
    with pytest.raises(UserError, match="empty"):
        prepare_prompt("   ", refine=False, motion_score=4)


# --- offline refiner ------------------------------------------------------------------------


def test_offline_refiner_is_deterministic_and_keeps_the_idea():
    first = offline_refine(IDEA)
    assert first == offline_refine(IDEA) == offline_refine(f"  {IDEA}. ")
    assert first.startswith(IDEA + ". ") and len(first) > len(IDEA) + 40
    others = {offline_refine(f"{IDEA} {i}") for i in range(8)}
    assert len(others) > 1  # the seed depends on the prompt
    lowered = first.lower()
    assert not any(word in lowered for word in ("subtitle", "caption", "text", "logo", "will"))
    assert "camera" not in offline_refine("a cat", mode="t2i").lower()


def test_offline_refiner_used_without_endpoint():
    prepared = prepare_prompt(IDEA, refine=True, motion_score=4)  # env has no OPENAI_*
    assert prepared.refiner == "offline"
    assert prepared.refined == offline_refine(IDEA)
    assert "offline refiner" in prepared.notices[0]
    assert prepared.refine_endpoint is None


def test_no_refine_keeps_prompt():
    prepared = prepare_prompt(IDEA, refine=False, motion_score=4, fps=16)
    assert prepared.refined is None and prepared.refiner is None and prepared.notices == []
    assert prepared.model_text == f"{IDEA}. 16 FPS. 4 motion score."


# --- shapes world (demo preset) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a green triangle moving right on a black background",
         "a green triangle moving right on a black background"),
        ("Violet ball rising upwards, grey backdrop", "a purple circle moving up on a gray background"),
        ("stationary orange box against a dark background",
         "an orange square standing still on a black background"),
        ("a cyan square drifting leftward on gray", "a cyan square moving left on a gray background"),
        ("white static triangle on black", "a white triangle standing still on a black background"),
        ("turquoise disc falling downwards on a grey background",
         "a cyan circle moving down on a gray background"),
        ("The yellow square does not move in front of a black backdrop.",
         "a yellow square standing still on a black background"),
        ("red triangle, not moving, gray background",
         "a red triangle standing still on a gray background"),
        ("A blue circle climbs over a plain black background.",
         "a blue circle moving up on a black background"),
    ],
)
def test_shapes_world_synonyms(prompt, expected):
    assert normalize_to_shapes_world(prompt) == (expected, None)


def test_shapes_world_out_of_vocabulary_is_deterministic_with_notice():
    caption, notice = normalize_to_shapes_world("a cat jumping over a fence")
    assert caption == normalize_to_shapes_world("a cat jumping over a fence")[0]
    assert notice and "only knows the shapes world" in notice and "cat" in notice
    assert caption.endswith("background")
    _, blue_notice = normalize_to_shapes_world("a red circle on a blue background")
    assert blue_notice and "blue background" in blue_notice


def test_shapes_world_preset_never_calls_the_server(stub):
    prepared = prepare_prompt("a Red Circle going up", refine=True, motion_score=4,
                              settings=settings_for(stub), vocabulary="shapes-world")
    assert prepared.refined == normalize_to_shapes_world("a Red Circle going up")[0]
    assert prepared.refined.startswith("a red circle moving up on a ")
    assert prepared.refiner == "shapes_world" and stub.chat_requests == []


def test_a_vocabulary_preset_always_maps_and_says_what_it_understood():
    """#33: the demo preset maps every prompt (not only with --refine-prompt) and tells the user."""
    mapped = prepare_prompt("square in purple, sinking downward", refine=False, motion_score=4,
                            vocabulary="shapes-world")
    assert mapped.refined.startswith("a purple square moving down on a ")
    assert mapped.notices == [f"understood as '{mapped.refined}'"]
    canonical = prepare_prompt(mapped.refined, refine=False, motion_score=4, vocabulary="shapes-world")
    assert canonical.refined == mapped.refined and canonical.notices == []
    night = prepare_prompt("a cat on a roof at night", refine=False, motion_score=4, vocabulary="shapes-world")
    unknown = night.notices[0].split("does not know: ")[1]
    assert "cat" in unknown and "at" not in unknown.split(", ")
    with pytest.raises(UserError, match="unknown prompt vocabulary 'klingon'"):
        prepare_prompt("a cat", refine=False, motion_score=4, vocabulary="klingon")


# --- CLI -------------------------------------------------------------------------------------


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    refine_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_run_prints_refined_prompt_and_dynamic_score(stub, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", stub.base_url)
    stub.queue(StubReply.text(REFINED), StubReply.text("9 motion score"))
    code = refine_command.run(cli_args("--prompt", IDEA, "--motion-score", "dynamic",
                                       "--refine-model", "tiny"))
    out = capsys.readouterr()
    assert code == 0
    assert out.out.splitlines() == [REFINED, "motion score: 9 (dynamic)"]
    assert stub.chat_requests[0].body["model"] == "tiny"


def test_cli_run_server_failure_prints_original(stub, capsys):
    stub.set_default(StubReply.error(401, "nope"))
    code = refine_command.run(cli_args("--prompt", IDEA, "--refine-base-url", stub.base_url))
    out = capsys.readouterr()
    assert code == 0 and out.out.strip() == IDEA
    assert "rejected the API key" in out.err


def test_cli_run_input_errors(tmp_path):
    with pytest.raises(UserError, match="--ref"):
        refine_command.run(cli_args("--prompt", "x", "--mode", "i2v"))
    with pytest.raises(UserError, match="cannot read reference image"):
        refine_command.run(cli_args("--prompt", "x", "--mode", "i2v", "--ref", str(tmp_path / "no.png")))
    with pytest.raises(UserError, match="1-15"):
        refine_command.run(cli_args("--prompt", "x", "--motion-score", "99"))


def test_generate_flags_helper(monkeypatch):
    from opensora.refine.arguments import add_refine_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_refine_arguments(parser)
    args = parser.parse_args(["--refine-prompt", "--refine-base-url", "http://h:1/v1",
                              "--refine-model", "m", "--refine-timeout", "7"])
    settings = settings_from_args(args)
    assert args.refine_prompt is True
    assert (settings.base_url, settings.model, settings.timeout_s) == ("http://h:1/v1", "m", 7.0)
    assert not settings_from_args(parser.parse_args([])).configured


def test_cli_subprocess_against_stub(stub):
    # `python -m opensora` imports every command module; skip while siblings are unwritten.
    for sibling in ("generate", "check", "parity"):
        pytest.importorskip(f"opensora.commands.{sibling}")
    stub.queue(StubReply.text(REFINED))
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env.update(OPENAI_BASE_URL=stub.base_url, OPENAI_API_KEY=SECRET,
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, "-m", "opensora", "refine", "--prompt", IDEA],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == REFINED
    assert SECRET not in result.stdout + result.stderr
    assert stub.chat_requests[0].headers["authorization"] == f"Bearer {SECRET}"


def test_prepared_prompt_is_a_dataclass():
    prepared = PreparedPrompt("a", None, 4, "fixed", "a. 24 FPS. 4 motion score.")
    assert prepared.text == "a" and prepared.to_sidecar()["notices"] == []
