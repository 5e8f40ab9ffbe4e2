"""A partner's webhook endpoint for tests: a real HTTP server on 127.0.0.1 that answers from a script."""

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One scripted answer: a status, headers, and how long to wait before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


class PartnerEndpoint:
    """Serve POSTs on an ephemeral port; answer each with the next scripted reply (200 once the script runs out)."""

    def __init__(self, script: list[Reply] | None = None):
        self.script = list(script or [])
        self.received: list[Received] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with endpoint._lock:
                    endpoint.received.append(Received(dict(self.headers.items()), body))
                    reply = endpoint.script.pop(0) if endpoint.script else Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, as a timed-out sender does

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/crossmkt"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def event_ids(self) -> list[str]:
        return [request.headers["X-Crossmkt-Event-Id"] for request in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
