"""A small client for OpenAI-compatible HTTP servers (llama-server, vLLM, LiteLLM, llama-swap,
faster-whisper servers), on the standard library only.

Every backend that talks to a server goes through :class:`OpenAIClient`, so errors look the same
everywhere:

* :class:`BackendUnavailable` - the server could not be reached or timed out (a failover trigger);
* :class:`BackendError` - the server answered, but with an error status or a malformed body.
"""
from __future__ import annotations

import http.client
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

log = logging.getLogger(__name__)


class BackendError(RuntimeError):
    """The backend answered with an error or garbage; retrying elsewhere will not help.

    `status` is the HTTP status when the server answered with one, `body` the start of its
    error body, `timed_out` whether the server went silent (callers decide on these, never on
    the message text)."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "",
                 timed_out: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.timed_out = timed_out


class BackendUnavailable(BackendError):
    """The backend could not be reached, refused the connection, timed out, or dropped the
    connection in the middle of an answer."""


class StreamTruncated(BackendUnavailable):
    """A streamed answer ended without its end marker."""


class Cancelled(Exception):
    """The caller cancelled an in-flight request (e.g. barge-in)."""


@dataclass(frozen=True)
class ServerConfig:
    base_url: str  # e.g. "http://gpu-server:8080/v1"
    api_key: str = ""
    model: str = ""
    timeout: float = 30.0  # seconds for connect and for each read
    connect_timeout: float = 3.0


class OpenAIClient:
    """Blocking client; call it from a worker thread, never from a ROS callback."""

    def __init__(self, config: ServerConfig) -> None:
        parts = urlsplit(config.base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"server URL must look like http://host:port/v1, got "
                             f"'{config.base_url}'")
        self.config = config
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._prefix = parts.path.rstrip("/")

    @property
    def url(self) -> str:
        return self.config.base_url

    # ------------------------------------------------------------------ plumbing
    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.config.connect_timeout)

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if self.config.api_key:
            headers["Authorization"] = f"Bearer {self.config.api_key}"
        return headers

    def _open(self, method: str, path: str, body: bytes | None,
              content_type: str = "application/json", timeout: float | None = None,
              ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn = self._connection()
        url = f"{self._prefix}{path}"
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(timeout or self.config.timeout)
            conn.request(method, url, body=body, headers=self._headers(content_type))
            resp = conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise BackendUnavailable(f"{self.url}: {type(e).__name__}: {e}",
                                     timed_out=isinstance(e, TimeoutError)) from e
        if resp.status >= 400:
            detail = resp.read(2000).decode("utf-8", "replace")
            conn.close()
            error = BackendUnavailable if resp.status in (502, 503, 504) else BackendError
            raise error(f"{self.url}{path}: HTTP {resp.status} {resp.reason}: {detail}",
                        status=resp.status, body=detail)
        return conn, resp

    def _read_json(self, path: str, conn: http.client.HTTPConnection,
                   resp: http.client.HTTPResponse) -> Any:
        """Read a whole JSON body and close the connection."""
        try:
            return _parse_json(resp.read(), f"{self.url}{path}")
        except (OSError, http.client.HTTPException) as e:
            raise BackendUnavailable(f"{self.url}{path}: {e}",
                                     timed_out=isinstance(e, TimeoutError)) from e
        finally:
            conn.close()

    def get_json(self, path: str, timeout: float | None = None) -> Any:
        return self._read_json(path, *self._open("GET", path, None, timeout=timeout))

    def post_json(self, path: str, payload: Mapping[str, Any],
                  timeout: float | None = None) -> Any:
        return self._read_json(path, *self._open("POST", path, json.dumps(payload).encode(),
                                                 timeout=timeout))

    def post_multipart(self, path: str, fields: Mapping[str, str],
                       files: Mapping[str, tuple[str, bytes, str]],
                       timeout: float | None = None) -> Any:
        """POST multipart/form-data; files maps field -> (filename, bytes, content type)."""
        boundary = uuid.uuid4().hex
        chunks: list[bytes] = []
        for name, value in fields.items():
            chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'
                          f"\r\n\r\n{value}\r\n".encode())
        for name, (filename, data, ctype) in files.items():
            chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                          f'filename="{filename}"\r\nContent-Type: {ctype}\r\n\r\n'.encode())
            chunks.append(data)
            chunks.append(b"\r\n")
        chunks.append(f"--{boundary}--\r\n".encode())
        return self._read_json(path, *self._open(
            "POST", path, b"".join(chunks),
            content_type=f"multipart/form-data; boundary={boundary}", timeout=timeout))

    def stream_json(self, path: str, payload: Mapping[str, Any],
                    cancel: threading.Event | None = None,
                    timeout: float | None = None) -> Iterator[Any]:
        """POST with "stream": true and yield each server-sent event's JSON object.

        Setting `cancel` closes the connection at the next event and raises :class:`Cancelled`.
        A stream that ends without "data: [DONE]" raises :class:`StreamTruncated` (the server
        died or dropped the connection mid-answer), a read timeout :class:`BackendUnavailable`.
        """
        body = dict(payload, stream=True)
        conn, resp = self._open("POST", path, json.dumps(body).encode(), timeout=timeout)
        try:
            while True:
                if cancel is not None and cancel.is_set():
                    raise Cancelled()
                try:
                    line = resp.readline()
                except (OSError, http.client.HTTPException) as e:
                    raise BackendUnavailable(f"{self.url}{path}: stream broke: {e}",
                                             timed_out=isinstance(e, TimeoutError)) from e
                if not line:
                    raise StreamTruncated(f"{self.url}{path}: the connection closed before "
                                          "the end of the answer")
                text = line.decode("utf-8", "replace").strip()
                if not text or text.startswith(":") or not text.startswith("data:"):
                    continue
                data = text[5:].strip()
                if data == "[DONE]":
                    return
                yield _parse_json(data.encode(), f"{self.url}{path} (stream)")
        finally:
            conn.close()

    # ------------------------------------------------------------------ endpoints
    def chat(self, messages: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
        """/chat/completions, whole answer. Returns the response object (validated shape)."""
        payload = {"model": self.config.model or "default", "messages": messages, **params}
        out = self.post_json("/chat/completions", payload)
        chat_content(out)  # raises BackendError on a malformed body
        return out

    def chat_stream(self, messages: list[dict[str, Any]], cancel: threading.Event | None = None,
                    **params: Any) -> Iterator[str]:
        """/chat/completions with streaming; yields content deltas (may be empty strings)."""
        payload = {"model": self.config.model or "default", "messages": messages, **params}
        finished = False
        try:
            for event in self.stream_json("/chat/completions", payload, cancel=cancel):
                choices = event.get("choices") if isinstance(event, dict) else None
                if not choices:
                    continue
                finished = finished or bool(choices[0].get("finish_reason"))
                delta = choices[0].get("delta") or {}
                content = delta.get("content")
                if content:
                    yield str(content)
        except StreamTruncated:
            if not finished:  # a server that omits [DONE] after a finish_reason is fine
                raise

    def health(self, timeout: float = 2.0) -> bool:
        """Cheap reachability probe for failover: True when the server answers HTTP at all.

        GET /models; a 4xx answer (some servers, e.g. faster-whisper-server, have no /models)
        still proves the server is up. Unreachable, timed out or 5xx means not healthy.
        """
        try:
            self.get_json("/models", timeout=timeout)
            return True
        except BackendUnavailable:
            return False
        except BackendError as e:
            return e.status is not None and e.status < 500


def chat_content(response: Any) -> str:
    """The assistant text of a /chat/completions response, or BackendError if malformed."""
    try:
        content = response["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as e:
        raise BackendError(f"malformed chat completion (no choices[0].message.content): "
                           f"{str(response)[:300]}") from e
    if content is None:
        return ""
    if not isinstance(content, str):
        raise BackendError(f"chat completion content is {type(content).__name__}, not text")
    return content


def _parse_json(raw: bytes, where: str) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BackendError(f"{where}: response is not JSON: {raw[:200]!r}") from e
