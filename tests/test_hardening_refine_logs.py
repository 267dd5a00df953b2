"""#27.5: credentials in the refinement server's URL (user:password, query string) reach the
server and nothing else: no output line, log record, sidecar or results.csv row shows them."""

import logging
import os

from conftest import run_cli
from openai_stub_server import OpenAIStubServer, StubReply
from opensora.refine.server import chat
from opensora.refine.settings import RefineSettings

PASSWORD = "Pw-Zq81kUnLikelyToAppear"
QUERY_KEY = "Qk-7730UnLikelyToAppear"
API_KEY = "sk-Hk-5512UnLikelyToAppear"
REFINED = "a red circle moving left on a black background, seen from above"


def secret_url(stub: OpenAIStubServer) -> str:
    return stub.base_url.replace("http://", f"http://alice:{PASSWORD}@") + f"?apikey={QUERY_KEY}"


def test_generate_with_a_credential_url_leaks_nothing_and_still_reaches_the_server(tmp_path):
    """The CLI run (httpx's INFO request log included), its sidecar and results.csv; the request
    path stays /v1/chat/completions with the query sent along (was: path broken, full URL logged)."""
    with OpenAIStubServer() as stub:
        stub.queue(StubReply.text(REFINED))
        env = {**os.environ, "OPENAI_BASE_URL": secret_url(stub), "OPENAI_API_KEY": API_KEY}
        proc = run_cli("generate", "--preset", "tiny-random", "--prompt", "a circle", "--num-frames", "5",
                       "--num-steps", "1", "--refine-prompt", "--output-dir", str(tmp_path), env=env)
        requests = stub.chat_requests
    assert proc.returncode == 0, proc.stderr
    assert requests and requests[0].path == f"/v1/chat/completions?apikey={QUERY_KEY}"
    everything = proc.stdout + proc.stderr + "".join(p.read_text() for p in tmp_path.glob("*.json"))
    everything += (tmp_path / "results.csv").read_text()
    assert REFINED in everything  # the refined prompt was used and recorded
    for secret in (PASSWORD, QUERY_KEY, API_KEY, "alice:"):
        assert secret not in everything, secret


def test_request_logs_of_any_level_show_no_credentials(caplog):
    """In-process (the app's case): every logger at DEBUG, also the openai client's httpx2 ones."""
    caplog.set_level(logging.DEBUG)
    with OpenAIStubServer() as stub:
        stub.queue(StubReply.error(400, f"bad request for {secret_url(stub)}"))
        stub.queue(StubReply.text(REFINED))
        settings = RefineSettings(base_url=secret_url(stub), api_key=API_KEY, backoff_s=0.01)
        try:
            chat(settings, [{"role": "user", "content": "hi"}], 16)
        except Exception as err:  # the 400: its message quotes the server, which echoed the URL
            failure = str(err)
        assert chat(settings, [{"role": "user", "content": "hi"}], 16) == REFINED
    assert "HTTP Request: POST" in caplog.text  # the request log is there, only cleaned
    for secret in (PASSWORD, QUERY_KEY, API_KEY):
        assert secret not in caplog.text and secret not in failure, secret
