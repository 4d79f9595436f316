"""Schemathesis fuzzing of the HTTP API, from the live app's own ``/openapi.json``.

Two tests, both reading the schema from the running app (a new field is fuzzed without
touching this file):

- the ``schemathesis run`` CLI over every documented operation: its examples, coverage
  (boundary values, missing or mistyped fields, undeclared methods) and fuzzing phases, with
  valid and schema-violating data, and every response check but ``positive_data_acceptance``;
- the two scoring operations with schema-valid bodies of real, odd and broken image files,
  served reward names and hostile prompts (the CLI's random strings never reach a decoder).

Checks on every response: no 5xx, an answer within the request timeout, the status code,
content type, headers and body as documented, and schema-violating requests rejected.
Runs are reproducible: Schemathesis and Hypothesis run derandomized, with no example database,
no deadline (the machine is shared) and a fixed number of examples per operation.
Schemathesis' pytest loader (``schemathesis.pytest.from_fixture``) is not used: with pytest 9.2
it fails on the removed ``Node._nodeid``.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.config import SchemathesisConfig

from services.images import encode_base64_png
from tests.integration import hostile_inputs as hostile

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REQUEST_TIMEOUT_S = 30
MAX_EXAMPLES = 50
SCORE, SCORE_MANY = "POST /v1/rewards/{name}/score", "POST /v1/score"
# Schema-valid bodies can still break rules JSON Schema cannot state (one prompt per image,
# base64 of an image file), so a 4xx for them is correct: positive_data_acceptance is off.
CONFIG = {
    "request-timeout": REQUEST_TIMEOUT_S,
    "generation": {"deterministic": True},
    "checks": {
        "not_a_server_error": {"enabled": True},
        "status_code_conformance": {"enabled": True},
        "content_type_conformance": {"enabled": True},
        "response_schema_conformance": {"enabled": True},
        "response_headers_conformance": {"enabled": True},
        "positive_data_acceptance": {"enabled": False},
    },
}
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


_ODD_MODES = hostile.odd_mode_cases()
IMAGE_FILES = st.sampled_from(
    [encode_base64_png(expected) for _, _, expected in _ODD_MODES]  # plain RGB PNGs
    + [_b64(data) for _, data, _ in _ODD_MODES]
    + [_b64(data) for _, data, _ in hostile.bad_image_cases()]
    + ["data:image/png;base64," + _b64(hostile.noisy_png(8)), "%%% not base64", "QUJD\nREVG"]
)
PROMPTS = st.one_of(
    st.sampled_from(["a cat", "一只猫 🐱", "x" * 2001, "tab\tnew\nline", "bad \x00 nul"]),
    st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=30),
    st.text(max_size=30),
)


def test_schemathesis_run_finds_no_failure(reward_app, tmp_path):
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "run", f"{reward_app.http_url}/openapi.json"),
        *("--phases", "examples,coverage,fuzzing", "--mode", "all"),
        *("--checks", "all", "--exclude-checks", "positive_data_acceptance"),
        *("--max-examples", str(MAX_EXAMPLES), "--generation-deterministic"),
        *("--request-timeout", str(REQUEST_TIMEOUT_S), "--workers", "1", "--no-color"),
    ]
    # cwd: the CLI keeps its cache (.schemathesis/) in the working directory
    run = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    paths = requests.get(f"{reward_app.http_url}/openapi.json", timeout=REQUEST_TIMEOUT_S)
    operations = sum(len(methods) for methods in paths.json()["paths"].values())
    assert f"Tested: {operations}" in run.stdout, run.stdout[-5000:]


@pytest.fixture(scope="module")
def api_schema(reward_app):
    """The live app's OpenAPI schema, loaded over HTTP."""
    return schemathesis.openapi.from_url(
        f"{reward_app.http_url}/openapi.json",
        config=SchemathesisConfig.from_dict(CONFIG),
        timeout=REQUEST_TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def session():
    """One HTTP session for every fuzzed request."""
    with requests.Session() as http:
        yield http


@pytest.fixture(scope="module")
def reward_names(reward_app, session):
    """The served rewards plus one unknown name."""
    reply = session.get(f"{reward_app.http_url}/v1/rewards", timeout=REQUEST_TIMEOUT_S)
    return [entry["name"] for entry in reply.json()["rewards"]] + ["no-such-reward"]


@st.composite
def _image_batch(draw, names: list[str], many: bool) -> tuple[dict, dict]:
    """Path parameters and a schema-valid body of real or broken files and odd prompts."""
    images = draw(st.lists(IMAGE_FILES, min_size=1, max_size=4))
    body: dict = {"images": images}
    if draw(st.integers(0, 4)):  # mostly with prompts: two of the rewards need them
        body["prompts"] = draw(st.lists(PROMPTS, min_size=len(images), max_size=len(images)))
    if many:
        rewards = st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True)
        body["rewards"] = draw(rewards)
        return {}, body
    return {"name": draw(st.sampled_from(names))}, body


@pytest.mark.parametrize("label", [SCORE, SCORE_MANY])
def test_scoring_real_and_broken_files_conforms_to_the_schema(
    api_schema, session, reward_names, label
):
    operation = api_schema.find_operation_by_label(label)

    @FUZZ_SETTINGS
    @given(request=_image_batch(reward_names, many=label == SCORE_MANY))
    def fuzz(request):
        path_parameters, body = request
        case = operation.Case(
            path_parameters=path_parameters, body=body, media_type="application/json"
        )
        response = case.call_and_validate(session=session, timeout=REQUEST_TIMEOUT_S)
        if response.status_code == 200 and label == SCORE:
            assert len(response.json()["results"]) == len(body["images"])

    fuzz()
