"""The published OpenAPI document against the real server: schemathesis (its CLI, run as it is
run by hand) fuzzes `python -m app` from its own /openapi.json, with and without an API key,
and every check must pass: no 5xx, only documented statuses, content types, headers and
bodies, schema-violating requests refused, the key enforced where it is declared.

Left out: positive data acceptance, which expects any schema-valid request to succeed. A
schema cannot say "a real image" or "a valid tensor", so random bytes are rightly refused with
415 or 400.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from live_server import PYTHON_M_APP, Server

pytestmark = pytest.mark.slow

KEY = "s3cret-contract-key"
# A fixed seed and a fixed number of cases per operation: the same requests every run, about
# ten seconds each on a 2-core machine.
SEED, EXAMPLES = 20240607, 30
# Schemathesis's default statuses for "the request was refused", and 413: too many files in
# one batch (past `maxItems`) is refused as a payload over its limit.
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429",
           "5xx"]
CONFIG = "[checks.negative_data_rejection]\nexpected-statuses = [{}]\n".format(
    ", ".join(f'"{status}"' for status in REFUSED))
RUN_SCHEMATHESIS = "from schemathesis.cli import schemathesis; schemathesis()"


def schemathesis(url: str, workdir: Path, *options: str) -> subprocess.CompletedProcess[str]:
    config = workdir / "schemathesis.toml"
    config.write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    return subprocess.run(
        [sys.executable, "-c", RUN_SCHEMATHESIS, "--config-file", str(config), "--no-color",
         "run", f"{url}/openapi.json", "--checks", "all",
         "--exclude-checks", "positive_data_acceptance", "--seed", str(SEED),
         "--max-examples", str(EXAMPLES), "--workers", "1", "--generation-database", "none",
         "--request-timeout", "30", *options],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.parametrize("api_key", [None, KEY], ids=["without a key", "with a key"])
def test_the_server_keeps_every_promise_of_its_openapi_document(
    checkpoint: Path, tmp_path: Path, api_key: str | None,
) -> None:
    env = {"CNN_SERVE_WORKERS": "1"} | ({"CNN_SERVE_API_KEY": api_key} if api_key else {})
    server = Server(checkpoint, PYTHON_M_APP, **env)
    try:
        server.wait_healthy()
        auth = ["--header", f"Authorization: Bearer {api_key}"] if api_key else []
        result = schemathesis(server.url, tmp_path, *auth)
    finally:
        server.close()
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    # Every operation of the document was exercised, not skipped for a schema it cannot read.
    selected = re.search(r"Selected: (\d+)/(\d+)", report)
    tested = re.search(r"Tested: (\d+)", report)
    assert selected and tested, report
    assert int(tested.group(1)) == int(selected.group(1)) == int(selected.group(2)), report
