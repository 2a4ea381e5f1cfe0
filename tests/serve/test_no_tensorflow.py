"""The serve environment runs the embedding model on ONNX Runtime: serving a request imports no
TensorFlow (nor Keras or the converter), checked inside a real `simrec serve` after it answered."""

import json
import subprocess
import sys

from serve_helpers import free_port, server_env

# The server's own main() in a thread of this process, so that after a real HTTP request this process's
# sys.modules is the server's.
SERVE_THEN_LIST_MODULES = """
import base64, json, os, sys, threading, time
import pandas as pd, requests
from simrec.serving import cli

package, port = sys.argv[1], sys.argv[2]
argv = ["--package", package, "--port", port, "--no-auth", "--no-access-log"]
threading.Thread(target=cli.main, args=(argv,), daemon=True).start()
url = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    try:
        if requests.get(url + "/v2/health/ready", timeout=2).status_code == 200:
            break
    except requests.ConnectionError:
        pass
    time.sleep(0.2)
png = bytes(pd.read_parquet(os.path.join(package, "items.parquet"))["image"].iat[0])
answer = requests.post(url + "/similar", json={"image": base64.b64encode(png).decode(), "k": 3}, timeout=30)
modules = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "onnx"))
print(json.dumps({"status": answer.status_code, "items": len(answer.json()["items"]), "modules": modules}))
sys.stdout.flush()
os._exit(0)
"""


def test_serving_a_request_imports_no_tensorflow(packages) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SERVE_THEN_LIST_MODULES, str(packages["v1"]), str(free_port())],
        capture_output=True,
        text=True,
        env=server_env(None),
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["status"] == 200 and found["items"] == 3
    assert found["modules"] == []
