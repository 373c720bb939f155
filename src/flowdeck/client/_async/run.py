"""A run, as an object: staging, starting, following, controlling, its products."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from flowdeck.client._async.ports import AsyncInputPort, AsyncOutputPort
from flowdeck.client._async.resource import AsyncResource
from flowdeck.client._backend import AsyncBackend
from flowdeck.client._shared import TERMINAL_STATES, present
from flowdeck.client.errors import NotFoundError
from flowdeck.client.files import AtomicFile, download_target


class AsyncRun(AsyncResource):
    """One run.  ``data`` is the last status the server sent; :meth:`status` refreshes it."""

    KIND: ClassVar[str] = "run"
    TERMINAL: ClassVar[frozenset[str]] = TERMINAL_STATES
    WAIT_TYPES: ClassVar[list[str] | None] = ["run.*", "step.*"]

    @property
    def cwl_job(self) -> dict[str, Any] | None:
        """A CWL run's job document as sent (of the last status), else None."""
        job = self.data.get("cwl_job")
        return job if isinstance(job, dict) else None

    # -- staging --------------------------------------------------------------------------
    async def stage_params(
        self, values: dict[str, Any] | None = None, **more: Any
    ) -> dict[str, Any]:
        """Merge parameter values (``None`` removes one)."""
        return await self._update("PATCH", "/params", json={**(values or {}), **more})

    async def upload(
        self, input: str, path: str | Path, filename: str | None = None
    ) -> dict[str, Any]:
        """Stream a local file to a file input (named ``filename``, or as the file)."""
        path = Path(path)
        with path.open("rb") as body:
            result: dict[str, Any] = await self._call(
                "PUT",
                f"/files/{input}",
                params={"filename": filename or path.name},
                content=AsyncBackend.chunks(body),
                headers={"Content-Type": "application/octet-stream"},
            )
        return result

    async def reference(
        self,
        input: str,
        *,
        data_path: str | None = None,
        run: str | None = None,
        product: str | None = None,
    ) -> dict[str, Any]:
        """Stage a file without sending it: ``data_path``, a file under the server's data
        root (read in place), or a snapshot of ``product`` (id or name) of your ``run``."""
        body = present(data_path=data_path, run=run, product=product)
        result: dict[str, Any] = await self._call("POST", f"/files/{input}/reference", json=body)
        return result

    async def remove_file(self, input: str, filename: str) -> None:
        """Unstage the file ``filename`` of ``input``."""
        await self._call("DELETE", f"/files/{input}", params={"filename": filename})

    async def files(self) -> list[dict[str, Any]]:
        """The files staged so far."""
        result: list[dict[str, Any]] = await self._call("GET", "/files")
        return result

    async def set_resources(self, **resources: Any) -> dict[str, Any]:
        """executor, cpus, memory, walltime, priority, env, slurm_options."""
        return await self._update("PUT", "/resources", json=resources)

    async def keep(self, keep: bool = True) -> dict[str, Any]:
        """Exempt the run from the server's retention (``keep=False``: no longer)."""
        return await self._update("PUT", "/keep", json={"keep": keep})

    async def validate(self) -> dict[str, Any]:
        """``{ok, problems}``: whether :meth:`start` would be accepted now."""
        result: dict[str, Any] = await self._call("POST", "/validate")
        return result

    async def start(self) -> dict[str, Any]:
        """Queue the staged run."""
        return await self._update("POST", "/start")

    # -- reading --------------------------------------------------------------------------
    async def steps(self) -> list[dict[str, Any]]:
        """Its steps with their state, attempts and times."""
        result: list[dict[str, Any]] = await self._call("GET", "/steps")
        return result

    async def logs(
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
        response = await self.client.send("GET", f"{self.url}/steps/{step}/logs", params=params)
        return response.content, int(response.headers.get("x-next-offset", offset))

    # -- control --------------------------------------------------------------------------
    async def pause(self, mode: str = "freeze") -> dict[str, Any]:
        """``freeze`` stops its running steps where they are; ``drain`` lets them end
        and starts no new one."""
        return await self._update("POST", "/pause", json={"mode": mode})

    async def rerun(
        self, from_step: str | None = None, params: dict[str, Any] | None = None
    ) -> AsyncRun:
        """A new queued run of this ended run's workflow version, parameters (``params``
        changes some) and files; unchanged steps are reused from the cache, ``from_step``
        and what depends on it run again whatever."""
        body: dict[str, Any] = {}
        if from_step:
            body["from_step"] = from_step
        if params:
            body["params"] = params
        return AsyncRun(self.client, await self._call("POST", "/rerun", json=body))

    # -- stream ports ---------------------------------------------------------------------
    async def ports(self) -> list[dict[str, Any]]:
        """The stream ports: ``{name, direction, url, records, closed}`` (fetched now)."""
        ports: list[dict[str, Any]] = (await self.status()).get("ports") or []
        return ports

    def input(self, port: str) -> AsyncInputPort:
        """The writer of stream input ``port``."""
        return AsyncInputPort(self.client, self.id, port)

    def output(self, port: str) -> AsyncOutputPort:
        """The reader of stream output ``port``."""
        return AsyncOutputPort(self.client, self.id, port)

    # -- products -------------------------------------------------------------------------
    async def products(self) -> list[dict[str, Any]]:
        """Its products: ``{id, name, size, sha256, media_type, url}`` each."""
        result: list[dict[str, Any]] = await self._call("GET", "/products")
        return result

    async def _product(self, product: str | dict[str, Any]) -> dict[str, Any]:
        if isinstance(product, dict):
            return product
        for p in await self.products():
            if product in (p["id"], p["name"]):
                return p
        raise NotFoundError(404, "not_found", f"run {self.id} has no product {product!r}")

    async def download(self, product: str | dict[str, Any], dest: str | Path) -> Path:
        """Save one product (its id, name or listing entry), a file of the status
        (``{name, size, url}``: a file parameter or output) or a staged file (an entry of
        :meth:`files`) to ``dest`` (a file, or a directory to save it in under its name),
        atomically.  Returns the path."""
        entry = await self._product(product)
        name = str(entry.get("name") or entry.get("filename"))
        if not entry.get("url"):
            raise NotFoundError(404, "not_found", f"{name!r} has no download link")
        return await self._save(entry["url"], Path(dest), Path(name).name)

    async def download_all(self, dest: str | Path) -> Path:
        """Every product in one zip."""
        return await self._save(f"{self.url}/products.zip", Path(dest), f"{self.id}-products.zip")

    async def _save(self, url: str, dest: Path, default_name: str) -> Path:
        target = download_target(dest, default_name)
        async with self.client.stream_bytes(url) as chunks:
            with AtomicFile(target) as out:
                async for chunk in chunks:
                    out.write(chunk)
        return target
