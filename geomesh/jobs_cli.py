"""`geomesh jobs|status|wait|download`: follow and fetch asynchronous jobs through a running edge's jobs API."""

from __future__ import annotations

import functools
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import click
import requests

DEFAULT_URL = "http://127.0.0.1:3000"
SUCCEEDED = frozenset({"successful", "complete_with_errors"})
# Paused is not terminal on the server, but it will not move again until someone resumes it.
STOPPED = frozenset({"failed", "canceled", "paused"})
TIMEOUT = (10, 60)  # seconds to connect, seconds between bytes
CHUNK = 1 << 16


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _reason(error: requests.RequestException) -> str:
    # requests buries the socket error under two urllib3 wrappers; its errno text is what helps.
    found = re.search(r"\[Errno -?\d+\] ([^\"')(]+)", str(error))
    return found.group(1).strip() if found else type(error).__name__


def _api_error(response: requests.Response) -> str:
    try:
        description = response.json()["description"]
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code} {response.reason} from {response.url}"
    # Harmony's descriptions start with "Error: ", which click prints already.
    return str(description).removeprefix("Error: ")


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise click.ClickException(f"{response.url} did not answer with JSON") from None


class Client:
    """An HTTP session on one edge that turns every failure into a one-line ClickException."""

    def __init__(self, url: str, token: str | None, user: str | None, password: str | None) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.auth: requests.auth.AuthBase | None = None
        if token:
            self.auth = _Bearer(token)
        elif user:
            self.auth = requests.auth.HTTPBasicAuth(user, password or "")

    def send(self, method: str, url: str, *, accept: Iterable[int] = (), **kwargs: Any) -> requests.Response:
        """Send to `url` (absolute, or relative to the edge); statuses >= 400 not in `accept` raise."""
        url = urljoin(self.url + "/", url)
        # Credentials go only to the edge itself, never to another host a data link may point at.
        auth = self.auth if _origin(url) == _origin(self.url) else None
        try:
            response = self.session.request(method, url, auth=auth, timeout=TIMEOUT, **kwargs)
        except requests.ConnectionError as error:
            raise click.ClickException(
                f"cannot connect to {'{}://{}'.format(*_origin(url))} ({_reason(error)}); "
                "is geomesh running there? (--url or GEOMESH_URL)"
            ) from None
        except requests.RequestException as error:
            raise click.ClickException(f"{method} {url} failed: {error}") from None
        if response.status_code >= 400 and response.status_code not in accept:
            message = _api_error(response)
            response.close()
            raise click.ClickException(message)
        return response

    def get_json(self, url: str, **kwargs: Any) -> Any:
        return _json(self.send("GET", url, **kwargs))

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get_json(f"jobs/{quote(job_id, safe='')}")

    def data_links(self, job: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every data link of the job, following its `next` links across pages."""
        page: dict[str, Any] | None = job
        while page is not None:
            links = page.get("links", [])
            yield from (link for link in links if link.get("rel") == "data")
            following = next((link["href"] for link in links if link.get("rel") == "next"), None)
            page = self.get_json(following) if following else None


def connection_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add --url/--token/--user/--password to a command and hand it a Client instead."""

    @click.option("--url", envvar="GEOMESH_URL", default=DEFAULT_URL, show_default=True, help="The geomesh edge (GEOMESH_URL).")
    @click.option("--token", envvar="GEOMESH_TOKEN", help="Bearer token (GEOMESH_TOKEN).")
    @click.option("--user", envvar="GEOMESH_USER", help="User for HTTP basic authentication (GEOMESH_USER).")
    @click.option("--password", envvar="GEOMESH_PASSWORD", help="Password for --user (GEOMESH_PASSWORD).")
    @functools.wraps(command)
    def with_client(url: str, token: str | None, user: str | None, password: str | None, **kwargs: Any) -> None:
        client = Client(url, token, user, password)
        try:
            command(client, **kwargs)
        finally:
            client.session.close()

    return with_client


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [headers, *rows])


@click.command("jobs")
@click.option("--page", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--limit", default=10, show_default=True, type=click.IntRange(min=1), help="Jobs per page.")
@click.option("--label", "labels", multiple=True, help="Only jobs carrying this label (repeatable).")
@connection_options
def jobs_command(client: Client, page: int, limit: int, labels: tuple[str, ...]) -> None:
    """List your jobs."""
    params: dict[str, Any] = {"page": page, "limit": limit}
    if labels:
        params["label"] = ",".join(labels)
    response = client.send("GET", "jobs", params=params)
    body = _json(response)
    hits = int(response.headers.get("Harmony-Hits", body.get("count", 0)))
    rows = [
        [
            job["jobID"],
            job["status"],
            f"{job.get('progress', 0)}%",
            job.get("createdAt", ""),
            str(job.get("numInputGranules", "")),
            ",".join(job.get("labels", [])),
        ]
        for job in body.get("jobs", [])
    ]
    if rows:
        click.echo(_table(["jobID", "status", "progress", "createdAt", "granules", "labels"], rows))
    click.echo(f"page {page} of {max(1, math.ceil(hits / limit))}, {hits} jobs")


@click.command("status")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the job as the API returns it.")
@connection_options
def status_command(client: Client, job_id: str, as_json: bool) -> None:
    """Show one job: status, progress, message, results and errors."""
    job = client.job(job_id)
    if as_json:
        click.echo(json.dumps(job, indent=2))
        return
    errors = job.get("errors", [])
    click.echo(
        f"job       {job['jobID']}\n"
        f"status    {job['status']} ({job.get('progress', 0)}%)\n"
        f"message   {job.get('message', '')}\n"
        f"created   {job.get('createdAt', '')}\n"
        f"updated   {job.get('updatedAt', '')}\n"
        f"granules  {job.get('numInputGranules', '')}\n"
        f"data      {sum(1 for _ in client.data_links(job))} links\n"
        f"errors    {len(errors)}"
    )
    for error in errors:
        click.echo(f"  {error.get('url', '')}: {error.get('message', '')}")


@click.command("wait")
@click.argument("job_id")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.05), help="Seconds between polls.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Give up after this many seconds (default: never).")
@connection_options
def wait_command(client: Client, job_id: str, interval: float, timeout: float | None) -> None:
    """Wait for a job to finish; exit 0 when it produced results, 1 otherwise."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with click.progressbar(length=100, label=f"job {job_id}") as bar:
        while True:
            body = _json(client.send("POST", "jobs/status", json={"jobIDs": [job_id]}))
            state = next((item for item in body.get("jobStatuses", []) if item.get("jobID") == job_id), None)
            if state is None:
                raise click.ClickException(f"job {job_id} not found")
            progress = state.get("progress", 0)
            bar.update(max(0, progress - bar.pos))
            if state["status"] in SUCCEEDED | STOPPED:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise click.ClickException(f"job {job_id} is still {state['status']} ({progress}%) after {timeout:g} s")
            time.sleep(interval)
    line = f"job {job_id} {state['status']} ({progress}%): {client.job(job_id).get('message', '')}"
    if state["status"] in STOPPED:
        raise click.ClickException(line)
    click.echo(line)


def _file_names(hrefs: list[str]) -> list[str]:
    """A safe local name per href (its last path segment), made unique within the job."""
    names: list[str] = []
    for href in hrefs:
        segment = unquote(urlsplit(href).path.rstrip("/").rsplit("/", 1)[-1])
        name = re.sub(r"[^\w.\-]+", "_", segment).lstrip(".") or "download"
        stem, suffix, number = Path(name).stem, Path(name).suffix, 2
        while name in names:
            name, number = f"{stem}-{number}{suffix}", number + 1
        names.append(name)
    return names


def _fetch(client: Client, href: str, target: Path) -> int:
    """Stream `href` into `target` by way of `target.part`, resuming what a previous run left; return bytes received."""
    part = target.with_name(target.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    # identity: byte offsets must refer to the file itself, not to a compressed rendition of it.
    headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={offset}-"} if offset else {})}
    with client.send("GET", href, headers=headers, stream=True, accept=(416,)) as response:
        if response.status_code == 416:
            # Nothing past the part's end: it is the whole file (a run stopped before the rename),
            # or it is longer than the file and cannot be a prefix of it, so start over.
            if response.headers.get("Content-Range") == f"bytes */{offset}":
                part.replace(target)
                return 0
            part.unlink()
            return _fetch(client, href, target)
        if response.status_code == 206:
            start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if not start or int(start.group(1)) != offset:
                raise click.ClickException(f"{href} answered a range other than the one asked for")
            click.echo(f"{target.name}: resuming at byte {offset}")
        else:
            offset = 0  # the server sent the whole file
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length is not None else None
        received = 0
        # An endless iterable lets click draw an indeterminate bar when the size is unknown.
        bar = click.progressbar(itertools.count(), length=expected, label=target.name, show_pos=expected is None)
        with part.open("ab" if offset else "wb") as out, bar:
            bar.update(offset)
            try:
                for chunk in response.iter_content(CHUNK):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            except requests.RequestException as error:
                raise click.ClickException(
                    f"{target.name}: interrupted after {offset + received} bytes ({_reason(error)}); run again to resume"
                ) from None
    if expected is not None and offset + received != expected:
        raise click.ClickException(f"{target.name}: got {offset + received} of {expected} bytes; run again to resume")
    part.replace(target)
    return received


@click.command("download")
@click.argument("job_id")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Download again the files already there.")
@connection_options
def download_command(client: Client, job_id: str, directory: Path, overwrite: bool) -> None:
    """Download every result of a job into DIRECTORY (default: the current one), resuming interrupted downloads."""
    started = time.monotonic()
    job = client.job(job_id)
    hrefs = list(dict.fromkeys(link["href"] for link in client.data_links(job)))
    if job["status"] not in SUCCEEDED | STOPPED:
        click.echo(f"job {job_id} is {job['status']} ({job.get('progress', 0)}%): downloading the {len(hrefs)} results ready so far")
    directory.mkdir(parents=True, exist_ok=True)
    fetched = skipped = received = 0
    for href, name in zip(hrefs, _file_names(hrefs)):
        target = directory / name
        if overwrite:
            target.with_name(name + ".part").unlink(missing_ok=True)
        elif target.exists():
            click.echo(f"{name}: already there, skipped")
            skipped += 1
            continue
        received += _fetch(client, href, target)
        fetched += 1
    click.echo(
        f"{len(hrefs)} files ({fetched} downloaded, {skipped} skipped), "
        f"{received} bytes in {time.monotonic() - started:.1f} s to {directory}"
    )

