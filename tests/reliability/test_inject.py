"""The fault-injection tools themselves: each fault really happens on the wire or in the process."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.reliability.inject import FaultProxy, armed_env, kill9, run_child, wait_for_marker


@pytest.fixture
def upstream() -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            return

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_proxy_passes_answers_resets_and_hangs(upstream: str) -> None:
    with FaultProxy(upstream) as proxy:
        assert httpx.post(proxy.url + "/echo", content=b"hello").content == b"hello"
        proxy.set("status", status=503, remaining=1, path="/echo")
        assert httpx.post(proxy.url + "/echo", content=b"x").status_code == 503
        assert httpx.post(proxy.url + "/echo", content=b"x").status_code == 200  # only the next one
        proxy.set("status", status=429, headers={"Retry-After": "7"})
        answer = httpx.post(proxy.url + "/other", content=b"x")
        assert (answer.status_code, answer.headers["Retry-After"]) == (429, "7")
        proxy.set("reset")
        with pytest.raises(httpx.TransportError):
            httpx.post(proxy.url + "/echo", content=b"x")
        proxy.set("hang", hang_seconds=5)
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(proxy.url + "/echo", content=b"x", timeout=0.5)
        assert proxy.count("status") == 2 and proxy.count("reset") == 1 and proxy.count("hang") == 1


def test_a_child_pauses_at_its_crash_point_and_dies_there(fault_dir: Path, tmp_path: Path) -> None:
    done = tmp_path / "after"
    code = ("from autopilot.faults import checkpoint\n"
            f"checkpoint('test.point')\nopen({str(done)!r}, 'w').write('reached')\n")
    proc = run_child(code, armed_env(fault_dir, "test.point"), tmp_path / "child.log")
    pid = wait_for_marker(fault_dir, "test.point", proc, log=tmp_path / "child.log")
    assert pid == proc.pid
    kill9(pid)
    assert proc.wait(timeout=10) == -9
    assert not done.exists()  # killed at the point: nothing after it ran
