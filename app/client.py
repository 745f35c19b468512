"""Python client for the surgical REST API.

Importable without torch or the server's dependencies (httpx, pydantic and tqdm only): notebooks
and CI scripts talk to a remote service with it, and the ``surgical`` CLI's remote commands are
built on it alone. Return values are the same pydantic schemas the API serves.

Exceptions, one tree::

    SurgicalError
    ├── TransportError             the service could not be reached / the connection broke
    ├── APIError                   an HTTP error with an RFC 9457 problem body (.status, .problem)
    │   ├── UnauthorizedError      401/403: missing or wrong API key
    │   ├── NotFoundError          404: no such job (or another owner's), no such artifact
    │   ├── ConflictError          409: e.g. deleting a running job, result of an unfinished job
    │   └── InvalidRequestError    400/422: the spec was refused; .problem.errors names the fields
    ├── JobNotSucceededError       wait(): the job ended failed or cancelled (.job)
    │   ├── JobFailedError
    │   └── JobCancelledError
    ├── WaitTimeoutError           wait() ran out of time (.job is the last seen); a TimeoutError
    └── PatchMismatchError         apply_patch(): the patch does not fit the model; a ValueError

Every name ends in ``Error`` and none repeats a server-side name (:mod:`app.errors` has
``NotFound``, ``Conflict``, ``Unauthorized``; these are what a *caller* of the API catches).

Example::

    with Client("http://127.0.0.1:8000") as client:
        job = client.submit({"model": {"source": "builtin", "name": "mnist-resnet"},
                             "data": {"source": "builtin", "name": "mnist", "shift": "fog"}})
        job = client.wait(job.id)
        print(client.result(job.id).recommendation)
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from app.schemas import (
    PATCH_FORMAT,
    ArtifactPublic,
    ArtifactsPublic,
    Diagnosis,
    JobPublic,
    JobResult,
    JobsPublic,
    Problem,
    TrialPublic,
    TrialsPublic,
)

__all__ = [
    "DEFAULT_URL",
    "APIError",
    "Client",
    "ConflictError",
    "InvalidRequestError",
    "JobCancelledError",
    "JobFailedError",
    "JobNotSucceededError",
    "NotFoundError",
    "PatchMismatchError",
    "SurgicalError",
    "TransportError",
    "UnauthorizedError",
    "WaitTimeoutError",
    "apply_patch",
]

DEFAULT_URL = "http://127.0.0.1:8000"


class SurgicalError(Exception):
    """Base of every error this client raises."""


class TransportError(SurgicalError):
    """The service could not be reached, or the connection broke."""


class APIError(SurgicalError):
    """The service answered with an error status and a problem body."""

    def __init__(self, status: int, problem: Problem) -> None:
        self.status = status
        self.problem = problem
        detail = problem.detail or problem.title
        message = f"{status} {problem.title}: {detail}" if detail != problem.title else f"{status} {detail}"
        others = [error.field for error in (problem.errors or [])[1:]]
        if others:  # the detail names the first field; say which others were refused too
            message += f" (also invalid: {', '.join(others)})"
        super().__init__(message)


class UnauthorizedError(APIError):
    pass


class NotFoundError(APIError):
    pass


class ConflictError(APIError):
    pass


class InvalidRequestError(APIError):
    pass


class JobNotSucceededError(SurgicalError):
    """``wait`` saw the job end in another state than ``succeeded``."""

    def __init__(self, job: JobPublic) -> None:
        self.job = job
        reason = f": {job.error.detail}" if job.error else ""
        super().__init__(f"job {job.id} {job.state}{reason}")


class JobFailedError(JobNotSucceededError):
    pass


class JobCancelledError(JobNotSucceededError):
    pass


class WaitTimeoutError(SurgicalError, TimeoutError):
    """``wait`` ran out of time; ``.job`` is the last state it saw."""

    def __init__(self, job: JobPublic, timeout: float) -> None:
        self.job = job
        super().__init__(f"job {job.id} still {job.state} after {timeout:g} s")


class PatchMismatchError(SurgicalError, ValueError):
    """``apply_patch``: a tensor of the patch is not in the model, or has another shape."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: InvalidRequestError, 401: UnauthorizedError, 403: UnauthorizedError,
    404: NotFoundError, 409: ConflictError, 422: InvalidRequestError,
}


class Client:
    """A synchronous client; use it as a context manager (it owns its HTTP connection pool).

    ``http`` injects a ready ``httpx.Client`` whose base URL is the service, for example
    ``fastapi.testclient.TestClient(create_app(settings))`` (the real app in-process) or one on
    an ``httpx.MockTransport``; the client then neither builds nor closes one. Otherwise one is
    built on ``base_url``. ``api_key`` is sent as a bearer token either way.

    Requests that are safe to repeat (GET, and a POST that carries an ``Idempotency-Key``) ride
    through a restarting service: a connection that cannot be made or breaks, and a 503 (the
    database is down), are retried with backoff (at the ``Retry-After`` pace when the service
    sends one) for up to ``retry_for`` seconds; 0 turns that off. ``on_retry`` is told once per
    request, when it first waits, why and for how long (the CLI prints it on a terminal, so a
    command to a service that is down does not sit silent).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        http: httpx.Client | None = None,
        timeout: float = 30.0,
        retry_for: float = 30.0,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.retry_for = retry_for
        self.on_retry = on_retry
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._owns_http = http is None
        try:
            self._http = http or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout)
        except httpx.InvalidURL as error:
            raise TransportError(f"invalid service URL {base_url!r}: {error}") from error
        self._http.headers.update(headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    # -- transport -------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        retryable = method == "GET" or "Idempotency-Key" in (kwargs.get("headers") or {})
        deadline = time.monotonic() + (self.retry_for if retryable else 0.0)
        delay = 0.2
        where = str(self._http.base_url).rstrip("/") + path
        told = False
        while True:
            try:
                response = self._http.request(method, path, **kwargs)
            except (httpx.HTTPError, httpx.InvalidURL) as error:
                # Connect errors, and connections the server closed while restarting: for a
                # request we may repeat, wait and try again until retry_for runs out.
                why = str(error) or type(error).__name__
                if not isinstance(error, _RETRYABLE) or time.monotonic() + delay > deadline:
                    raise TransportError(f"{method} {where}: {why}") from error
            else:
                if response.status_code != 503 or time.monotonic() + delay > deadline:
                    break
                why = "service unavailable (503)"
                delay = max(delay, min(_retry_after(response, delay), 5.0))
            if self.on_retry is not None and not told:
                self.on_retry(f"{method} {where}: {why}; retrying for up to {self.retry_for:g} s")
                told = True
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
        if response.status_code >= 400:
            raise _api_error(response)
        return response

    # -- jobs ------------------------------------------------------------------------------
    def submit(self, spec: Mapping[str, Any] | BaseModel, idempotency_key: str | None = None) -> JobPublic:
        """Submit a job; with an ``idempotency_key`` a retried submit returns the same job."""
        body = spec.model_dump(mode="json", exclude_unset=True) if isinstance(spec, BaseModel) else dict(spec)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _read(JobPublic, self._request("POST", "/v1/jobs", json=body, headers=headers))

    def get(self, job_id: str) -> JobPublic:
        return _read(JobPublic, self._request("GET", f"/v1/jobs/{job_id}"))

    def list(self, state: str | None = None, page_size: int | None = None,
             page_token: str | None = None) -> JobsPublic:
        """One page of jobs, newest first."""
        params = {k: v for k, v in {"state": state, "page_size": page_size, "page_token": page_token}.items() if v is not None}
        return _read(JobsPublic, self._request("GET", "/v1/jobs", params=params))

    def iter_jobs(self, state: str | None = None, page_size: int | None = None) -> Iterator[JobPublic]:
        """Every job, newest first, following the pagination cursor (``page_size`` per request)."""
        token: str | None = None
        while True:
            page = self.list(state=state, page_size=page_size, page_token=token)
            yield from page.data
            if not page.next_page_token:
                return
            token = page.next_page_token

    def cancel(self, job_id: str) -> JobPublic:
        return _read(JobPublic, self._request("POST", f"/v1/jobs/{job_id}/cancel"))

    def delete(self, job_id: str) -> None:
        self._request("DELETE", f"/v1/jobs/{job_id}")

    # ``builtins.list``: inside the class body ``list`` is the method above.
    def trials(self, job_id: str) -> builtins.list[TrialPublic]:
        return _read(TrialsPublic, self._request("GET", f"/v1/jobs/{job_id}/trials")).data

    def result(self, job_id: str) -> JobResult:
        return _read(JobResult, self._request("GET", f"/v1/jobs/{job_id}/result"))

    def diagnose(self, spec: Mapping[str, Any] | BaseModel, timeout: float | None = None,
                 progress: bool = False, poll: float | None = None) -> Diagnosis:
        """Diagnose where ``spec``'s shift lives without training: submit it as a
        ``search.strategy = "diagnose"`` job (seconds of forward passes), wait, return the
        diagnosis. Raises as :meth:`wait` does, and :class:`SurgicalError` when the job could
        not diagnose (its notes say why)."""
        body = spec.model_dump(mode="json", exclude_unset=True) if isinstance(spec, BaseModel) else dict(spec)
        body["search"] = {**dict(body.get("search") or {}), "strategy": "diagnose"}
        job = self.submit(body)
        self.wait(job.id, timeout=timeout, progress=progress, poll=poll)
        found = self.result(job.id)
        if found.diagnosis is None:
            raise SurgicalError(f"job {job.id} has no diagnosis: {'; '.join(found.notes)}")
        return found.diagnosis

    def artifacts(self, job_id: str) -> builtins.list[ArtifactPublic]:
        return _read(ArtifactsPublic, self._request("GET", f"/v1/jobs/{job_id}/artifacts")).data

    def download(self, job_id: str, name: str, path: str | Path) -> Path:
        """Stream an artifact to ``path`` (a file, or a directory to put ``name`` in)."""
        target = Path(path)
        if target.is_dir():
            target = target / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            with self._http.stream("GET", f"/v1/jobs/{job_id}/artifacts/{name}") as response:
                if response.status_code >= 400:
                    response.read()
                    raise _api_error(response)
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
        except (httpx.HTTPError, httpx.InvalidURL) as error:
            partial.unlink(missing_ok=True)
            raise TransportError(f"downloading {name}: {str(error) or type(error).__name__}") from error
        partial.replace(target)
        return target

    def wait(self, job_id: str, timeout: float | None = None, progress: bool = True,
             poll: float | None = None) -> JobPublic:
        """Poll until the job is done (at the server's ``Retry-After`` pace, or every ``poll``
        seconds); show a bar of finished trials on stderr. Returns the succeeded job; raises
        JobFailedError, JobCancelledError or WaitTimeoutError (after a last poll at the deadline)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = None
        try:
            while True:
                response = self._request("GET", f"/v1/jobs/{job_id}")
                job = _read(JobPublic, response)
                if progress:
                    bar = _update_bar(bar, job)
                if job.done:
                    break
                delay = poll if poll is not None else _retry_after(response, 2.0)
                if deadline is not None:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise WaitTimeoutError(job, timeout or 0.0)
                    delay = min(delay, remaining)
                time.sleep(delay)
        finally:
            if bar is not None:
                bar.close()
        if job.state == "failed":
            raise JobFailedError(job)
        if job.state == "cancelled":
            raise JobCancelledError(job)
        return job


_Model = TypeVar("_Model", bound=BaseModel)

#: Failures after which the same request may simply be sent again (nothing was processed, or
#: the request is idempotent and the server went away mid-answer).
_RETRYABLE = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
              httpx.ConnectTimeout, httpx.PoolTimeout)


def _read(model: type[_Model], response: httpx.Response) -> _Model:
    """A response body as ``model``, ignoring fields this client does not know: a newer server
    may add fields to its responses, and an older client must still read them."""
    return model.model_validate(response.json(), extra="ignore")


def _retry_after(response: httpx.Response, default: float) -> float:
    try:
        return max(0.2, float(response.headers.get("Retry-After", default)))
    except ValueError:
        return default


def _update_bar(bar: Any, job: JobPublic) -> Any:
    from tqdm.auto import tqdm

    total = job.progress.trials_budget or job.spec.search.max_trials
    if bar is None:
        bar = tqdm(total=total, desc=f"job {job.id[:8]}", unit="trial")
    bar.total = total
    bar.n = job.progress.trials_done
    said = job.progress.diagnosis
    if said and getattr(bar, "diagnosis_shown", None) != said:
        bar.write(f"shift diagnosis: {said}")  # once, above the bar, as soon as it is made
        bar.diagnosis_shown = said
    best = job.progress.best_val_acc
    doing = f"{job.state}" + (f" ({job.progress.phase})" if job.progress.phase else "")
    bar.set_postfix_str(
        doing + (f", best {best:.3f} ({job.progress.best_label})" if best is not None else "")
        + _time_left(job)
    )
    bar.refresh()
    return bar


def _time_left(job: JobPublic, now: datetime | None = None) -> str:
    """", 4:05 left" while a job with a time budget searches (its deadline is the server's
    clock; this assumes the client's agrees to within seconds)."""
    deadline = job.progress.deadline
    if deadline is None or job.state != "running" or job.progress.phase != "searching":
        return ""
    left = max(0, int((deadline - (now or datetime.now(UTC))).total_seconds()))
    return f", {left // 60}:{left % 60:02d} left"


def _api_error(response: httpx.Response) -> APIError:
    try:
        problem = Problem.model_validate(response.json())
    except Exception:
        text = " ".join(response.text.split())[:200]  # e.g. a proxy's HTML page: one line
        problem = Problem(title=response.reason_phrase or "error", status=response.status_code,
                          detail=text or None)
    return _BY_STATUS.get(response.status_code, APIError)(response.status_code, problem)


def apply_patch(model: Any, patch_path: str | Path) -> Any:
    """Load a downloaded ``patch.safetensors`` into ``model`` (in place; returned).

    Every tensor of the patch must name a tensor of the model with the same shape, so a patch
    for another architecture fails loudly (:class:`PatchMismatchError`) instead of half-applying; the
    model is untouched then. A file whose metadata names another format than
    :data:`app.schemas.PATCH_FORMAT` is refused the same way; a plain safetensors state dict
    (no format) is accepted. Needs torch and safetensors, imported here so the rest of the
    client does not.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(patch_path), framework="pt") as handle:
        found = (handle.metadata() or {}).get("format")
    if found is not None and found != PATCH_FORMAT:
        raise PatchMismatchError(f"patch {patch_path} has format {found!r}, not {PATCH_FORMAT!r}")
    patch = load_file(str(patch_path))
    state = model.state_dict()
    unknown = [name for name in patch if name not in state]
    if unknown:
        raise PatchMismatchError(f"patch {patch_path} names tensors the model does not have: {unknown[:5]}")
    wrong = [name for name, tensor in patch.items() if tuple(tensor.shape) != tuple(state[name].shape)]
    if wrong:
        raise PatchMismatchError(f"patch {patch_path} has tensors whose shape differs from the model's: {wrong[:5]}")
    model.load_state_dict(patch, strict=False)
    return model
