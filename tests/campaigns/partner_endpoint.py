"""A partner's webhook endpoint for tests: a real HTTP(S) server on 127.0.0.1 that answers from a script."""

import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    """One scripted answer: a status, headers, a body, and how long to wait before answering."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes = b"ok"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str = ""


class PartnerEndpoint:
    """Serve POSTs on an ephemeral port; answer each with the next scripted reply (200 once the script runs out).

    With ``tls`` (a server-side SSL context) it speaks HTTPS and records the server name
    each client asked for in its TLS handshake (SNI) in ``server_names``.
    """

    def __init__(self, script: list[Reply] | None = None, *, tls: ssl.SSLContext | None = None):
        self.script = list(script or [])
        self.received: list[Received] = []
        self.server_names: list[str | None] = []
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with endpoint._lock:
                    endpoint.received.append(Received(dict(self.headers.items()), body, self.path))
                    reply = endpoint.script.pop(0) if endpoint.script else Reply()
                if reply.delay:
                    time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, as a timed-out sender does

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.scheme = "https" if tls else "http"
        if tls is not None:
            tls.sni_callback = lambda _socket, name, _context: self.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = self.url_for("127.0.0.1")
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def url_for(self, host: str) -> str:
        """Return this endpoint's URL under another host name (one a test's resolver maps to 127.0.0.1)."""
        return f"{self.scheme}://{host}:{self.port}/hooks/crossmkt"

    def event_ids(self) -> list[str]:
        return [request.headers["X-Crossmkt-Event-Id"] for request in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
