"""A run, as an object of the synchronous client."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowdeck.client._shared import (
    API,
    TERMINAL_STATES,
    Event,
    Reconnect,
    download_target,
    event_query,
    file_chunks,
    save_atomically,
)
from flowdeck.client.errors import ApiError, NotFoundError
from flowdeck.client.ports import InputPort, OutputPort

if TYPE_CHECKING:
    from flowdeck.client.sync import Client

WAIT_STREAM_FAILURES = 2  # attempts in a row that deliver nothing; then wait() polls
Progress = Callable[[dict[str, Any]], None]


class Run:
    """One run.  ``data`` is the last status the server sent; :meth:`status` refreshes it."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data
        self.id: str = data["id"]

    def __repr__(self) -> str:
        return f"<Run {self.id} {self.state}>"

    @property
    def state(self) -> str:
        return str(self.data["state"])

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def url(self) -> str:
        return f"{API}/runs/{self.id}"

    def _update(self, data: dict[str, Any]) -> dict[str, Any]:
        self.data = data
        return data

    def _call(self, method: str, path: str = "", **kwargs: Any) -> Any:
        return self.client.request(method, self.url + path, **kwargs)

    # -- staging --------------------------------------------------------------------------
    def stage_params(self, values: dict[str, Any] | None = None, **more: Any) -> dict[str, Any]:
        """Merge parameter values (``None`` removes one)."""
        return self._update(self._call("PATCH", "/params", json={**(values or {}), **more}))

    def upload(self, input: str, path: str | Path, filename: str | None = None) -> dict[str, Any]:
        """Stream a local file to a file input."""
        path = Path(path)
        result: dict[str, Any] = self._call(
            "PUT",
            f"/files/{input}",
            params={"filename": filename or path.name},
            content=file_chunks(path),
            headers={"Content-Type": "application/octet-stream"},
        )
        return result

    def files(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/files")
        return result

    def set_resources(self, **resources: Any) -> dict[str, Any]:
        """executor, cpus, memory, walltime, priority, env."""
        return self._update(self._call("PUT", "/resources", json=resources))

    def validate(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/validate")
        return result

    def start(self) -> dict[str, Any]:
        return self._update(self._call("POST", "/start"))

    # -- reading --------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return self._update(self._call("GET"))

    def steps(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/steps")
        return result

    def logs(
        self,
        step: str,
        stream: str = "stdout",
        index: int = -1,
        attempt: int | None = None,
        offset: int = 0,
    ) -> tuple[bytes, int]:
        """A piece of a step's log from ``offset`` and the offset to continue from."""
        params: dict[str, Any] = {"stream": stream, "index": index, "offset": offset}
        if attempt is not None:
            params["attempt"] = attempt
        response = self.client.send("GET", f"{self.url}/steps/{step}/logs", params=params)
        return response.content, int(response.headers.get("x-next-offset", offset))

    def list_events(
        self, types: list[str] | None = None, after: int | None = None, limit: int = 100
    ) -> list[Event]:
        found = self._call("GET", "/events", params=event_query(None, types, after, limit))
        return [Event.of(e) for e in found]

    def events(
        self,
        types: list[str] | None = None,
        after: int | None = None,
        *,
        until_done: bool = True,
        reconnect: Reconnect | None = None,
        timeout: float | None = None,
    ) -> Iterator[Event]:
        """The run's events from its first (or after ``after``), live, reconnecting with
        ``Last-Event-ID``; with ``until_done`` it ends after the run's final event."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        query = event_query(None, types, None)
        final_seen = False
        for event in self.client.stream(f"{self.url}/events", query, after, reconnect, deadline):
            yield event
            if event.ends_run:
                final_seen = True
            if until_done and final_seen:
                return

    def wait(
        self, progress: Progress | None = None, timeout: float | None = None
    ) -> dict[str, Any]:
        """Block until the run ends and return its final status.  It follows the run's event
        stream (calling ``progress`` with the fresh status after each run or step change)
        and falls back to polling only if streaming fails.  ``TimeoutError`` after
        ``timeout`` seconds."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        status = self.status()
        if progress is not None:
            progress(status)
        if self.done:
            return status
        try:
            remaining = None if deadline is None else deadline - time.monotonic()
            events = self.events(
                types=["run.*", "step.*"],
                timeout=remaining,
                reconnect=Reconnect(max_failures=WAIT_STREAM_FAILURES),
            )
            for event in events:
                status = self.status()
                if progress is not None:
                    progress(status)
                if event.ends_run:
                    return status
        except ApiError as exc:
            if isinstance(exc, NotFoundError) or not (exc.status == 0 or exc.status >= 500):
                raise
        return self._poll(progress, deadline)

    def _poll(self, progress: Progress | None, deadline: float | None) -> dict[str, Any]:
        delay = 0.2
        while True:
            status = self.status()
            if progress is not None:
                progress(status)
            if self.done:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"run {self.id} is still {self.state}")
            time.sleep(delay)
            delay = min(2.0, delay * 1.5)

    # -- control --------------------------------------------------------------------------
    def pause(self, mode: str = "freeze") -> dict[str, Any]:
        return self._update(self._call("POST", "/pause", json={"mode": mode}))

    def resume(self) -> dict[str, Any]:
        return self._update(self._call("POST", "/resume"))

    def stop(self, grace_s: float | None = None) -> dict[str, Any]:
        body = {"grace_s": grace_s} if grace_s is not None else {}
        return self._update(self._call("POST", "/stop", json=body))

    def kill(self) -> dict[str, Any]:
        return self._update(self._call("POST", "/kill"))

    def delete(self) -> None:
        self._call("DELETE")

    def rerun(self, from_step: str | None = None, params: dict[str, Any] | None = None) -> Run:
        """A new queued run of this ended run's workflow version, parameters (``params``
        changes some) and files; unchanged steps are reused from the cache, ``from_step``
        and what depends on it run again whatever."""
        body: dict[str, Any] = {}
        if from_step:
            body["from_step"] = from_step
        if params:
            body["params"] = params
        return Run(self.client, self._call("POST", "/rerun", json=body))

    # -- stream ports ---------------------------------------------------------------------
    def ports(self) -> list[dict[str, Any]]:
        """The stream ports: ``{name, direction, url, records, closed}`` (fetched now)."""
        ports: list[dict[str, Any]] = self.status().get("ports") or []
        return ports

    def input(self, port: str) -> InputPort:
        """The writer of stream input ``port``."""
        return InputPort(self.client, self.id, port)

    def output(self, port: str) -> OutputPort:
        """The reader of stream output ``port``."""
        return OutputPort(self.client, self.id, port)

    # -- products -------------------------------------------------------------------------
    def products(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/products")
        return result

    def _product(self, product: str | dict[str, Any]) -> dict[str, Any]:
        if isinstance(product, dict):
            return product
        for p in self.products():
            if product in (p["id"], p["name"]):
                return p
        raise NotFoundError(404, "not_found", f"run {self.id} has no product {product!r}")

    def download(self, product: str | dict[str, Any], dest: str | Path) -> Path:
        """Save one product (its id, name or listing entry) to ``dest`` (a file, or a
        directory to save it in under its name), atomically.  Returns the path."""
        entry = self._product(product)
        return self._save(entry["url"], Path(dest), Path(entry["name"]).name)

    def download_all(self, dest: str | Path) -> Path:
        """Every product in one zip."""
        return self._save(f"{self.url}/products.zip", Path(dest), f"{self.id}-products.zip")

    def _save(self, url: str, dest: Path, default_name: str) -> Path:
        with self.client.stream_bytes(url) as chunks:
            return save_atomically(download_target(dest, default_name), chunks)
