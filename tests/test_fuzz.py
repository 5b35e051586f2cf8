"""Property-based fuzzing of the whole API from the server's own OpenAPI description (schemathesis,
in process through ASGI: no network). Whatever it sends, the server answers below 500.

A short run is part of `make test`; a longer one:

    VISLANG_FUZZ_EXAMPLES=500 .venv/bin/python -m pytest tests/test_fuzz.py
"""

import os
import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings

import vislang
from tiny import llava_folder
from vislang.serve.app import create_app
from vislang.serve.common import ServerSettings

EXAMPLES = int(os.environ.get("VISLANG_FUZZ_EXAMPLES", "15"))
_folder = Path(tempfile.mkdtemp(prefix="vislang-fuzz-"))
llava_folder(_folder)
app = create_app(vislang.load(_folder), ServerSettings(model_name="fuzz", max_body_bytes=1 << 20))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_makes_a_server_error(case):
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])
