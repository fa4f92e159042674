"""Raw HTTP/1.1 and process probes for the serving fault tests (cases 19 to 23).

The endpoint's fault cases need every byte under the test's control (a 100 MB body that is
never fully sent, a chunked body, a body trickled one byte at a time, 1,000 connections at
once) and must tell an answer apart from a reset, which a client library hides. So these
helpers speak HTTP/1.1 over plain sockets (blocking or asyncio), and read the server's memory
from `/proc`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import ADULT_CONFIG, PROJECT
from tests.serving_support import TOKEN

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Answer:
    """One HTTP response: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)

    @property
    def closes(self) -> bool:
        """The server said it closes the connection after this answer."""
        return self.headers.get("connection", "").lower() == "close"


def serving_config(folder: Path, **serving: Any) -> Path:
    """The demo config written to `folder` with `deployment.serving` overrides (data copied beside it)."""
    raw = yaml.safe_load(ADULT_CONFIG.read_text())
    raw["deployment"]["serving"] = {"poll_seconds": 3600.0, **serving}  # swaps only through /reload
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "adult_train.csv.gz"
    shutil.copyfile(PROJECT / "data/adult/adult_train.csv.gz", data)
    raw["data"] = {"source": data.name}
    path = folder / "adult_income.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def request_bytes(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None,
                  host: str = "127.0.0.1") -> bytes:
    """A whole HTTP/1.1 request with Content-Length (headers given override the defaults)."""
    fields = {"Host": host, "Content-Type": "application/json", "Content-Length": str(len(body)), **(headers or {})}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode() + body


def predict_bytes(rows: list[dict[str, Any]], path: str = "/predict", token: str | None = TOKEN) -> bytes:
    """A POST of `rows` as `{"records": rows}`, with the bearer token unless None."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return request_bytes("POST", path, json.dumps({"records": rows}).encode(), headers)


def read_answer(sock: socket.socket) -> Answer:
    """Read one response from a blocking socket (raises OSError on a reset, RemoteDisconnected on EOF)."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


async def read_answer_async(reader: asyncio.StreamReader) -> Answer:
    """Read one response framed by Content-Length from an asyncio stream."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body)


def is_closed(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Whether the server closed the connection (EOF or reset) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def rss_bytes(pid: int) -> int:
    """The process's resident memory now (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


class PeakRss:
    """The process's peak RSS while the block runs: sampled every 5 ms, and the kernel's own peak.

    The kernel's high-water mark (VmHWM) is reset on entry through `/proc/<pid>/clear_refs` when
    that is allowed, so a peak no sample caught is still counted; `growth` is the larger of both
    peaks minus the RSS on entry.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def _hwm(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def __enter__(self) -> PeakRss:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self._hwm_reset = True
        except OSError:
            self._hwm_reset = False
        self.start = self.peak = rss_bytes(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid), self._hwm() if self._hwm_reset else 0)

    @property
    def growth_mb(self) -> float:
        """Peak minus the RSS on entry, in MB."""
        return (self.peak - self.start) / 2**20


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0.0 when absent)."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
