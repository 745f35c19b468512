"""The client's public surface, pinned (like httpx's ``tests/test_exported_members.py``): a change
to it is a deliberate edit of this file, not an accident. And the client stays light."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import app.client as client_module
from app.client import Client

ROOT = Path(__file__).resolve().parents[2]

EXPORTED = [
    "DEFAULT_URL", "APIError", "Client", "ConflictError", "InvalidRequestError", "JobCancelledError",
    "JobFailedError", "JobNotSucceededError", "NotFoundError", "PatchMismatchError", "SurgicalError",
    "TransportError", "UnauthorizedError", "WaitTimeoutError", "apply_patch",
]

#: exception -> its bases within the tree (the module docstring draws the same tree)
TREE = {
    "SurgicalError": (Exception,),
    "TransportError": ("SurgicalError",),
    "APIError": ("SurgicalError",),
    "UnauthorizedError": ("APIError",),
    "NotFoundError": ("APIError",),
    "ConflictError": ("APIError",),
    "InvalidRequestError": ("APIError",),
    "JobNotSucceededError": ("SurgicalError",),
    "JobFailedError": ("JobNotSucceededError",),
    "JobCancelledError": ("JobNotSucceededError",),
    "WaitTimeoutError": ("SurgicalError", TimeoutError),
    "PatchMismatchError": ("SurgicalError", ValueError),
}

#: Client method -> its parameters (after self), in order
METHODS = {
    "__init__": ["base_url", "api_key", "http", "timeout", "retry_for", "on_retry"],
    "__enter__": [],
    "__exit__": ["exc"],
    "close": [],
    "submit": ["spec", "idempotency_key"],
    "get": ["job_id"],
    "list": ["state", "page_size", "page_token"],
    "iter_jobs": ["state", "page_size"],
    "cancel": ["job_id"],
    "delete": ["job_id"],
    "trials": ["job_id"],
    "result": ["job_id"],
    "diagnose": ["spec", "timeout", "progress", "poll"],
    "artifacts": ["job_id"],
    "download": ["job_id", "name", "path"],
    "wait": ["job_id", "timeout", "progress", "poll"],
}


def test_all_is_pinned_and_complete():
    assert client_module.__all__ == EXPORTED
    for name in EXPORTED:
        assert hasattr(client_module, name), name
    defined_here = {
        name for name, value in vars(client_module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == "app.client"
    }
    assert defined_here <= set(EXPORTED), defined_here - set(EXPORTED)


def test_the_exception_tree_is_the_documented_one():
    for name, bases in TREE.items():
        cls = getattr(client_module, name)
        expected = tuple(getattr(client_module, b) if isinstance(b, str) else b for b in bases)
        assert cls.__bases__ == expected, name
        assert name in (client_module.__doc__ or ""), f"{name} missing from the docstring tree"
    exported_errors = {n for n in EXPORTED if isinstance(getattr(client_module, n), type)
                       and issubclass(getattr(client_module, n), BaseException)}
    assert exported_errors == set(TREE)


def test_client_methods_are_pinned():
    public = {name for name, _ in inspect.getmembers(Client, inspect.isfunction)
              if not name.startswith("_")} | {"__init__", "__enter__", "__exit__"}
    assert public == set(METHODS)
    for name, params in METHODS.items():
        signature = inspect.signature(getattr(Client, name))
        assert list(signature.parameters)[1:] == params, name
    init = inspect.signature(Client.__init__).parameters
    assert init["http"].kind is inspect.Parameter.KEYWORD_ONLY


def test_importing_the_client_loads_no_server_or_ml_dependency():
    code = (
        "import sys, app.client, app.cli_client\n"
        "heavy = ['torch', 'fastapi', 'starlette', 'sqlalchemy', 'optuna', 'uvicorn', 'safetensors',"
        " 'selector', 'workers', 'app.main', 'app.store']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
