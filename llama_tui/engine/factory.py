"""Build the backend the settings describe: one place, used by the CLI, the UI and tests.

The settings arrive as `core.backend.BackendSettings` (config's `Settings` fits it), so the
engine never imports the config package. Backends import torch / transformers / an HTTP
client lazily, so this module (and its callers) stay cheap to import.
"""

from __future__ import annotations

from llama_tui.core.backend import Backend, BackendSettings


def make_backend(settings: BackendSettings) -> Backend:
    """A `RemoteBackend` when `settings.server` is set, else a `LocalBackend`. Not loaded yet.

    The caller runs `backend.load(progress)` (in a worker thread in the UI). `settings.raw`
    (no chat template) goes to the local backend; a server applies its own template.
    """
    backend: Backend
    if settings.server:
        from llama_tui.engine.remote.backend import RemoteBackend

        backend = RemoteBackend(
            settings.server,
            settings.server_model,
            settings.api_key_env,
            verify_tls=settings.verify_tls,
        )
        return backend
    from llama_tui.engine.local.backend import LocalBackend

    backend = LocalBackend(settings.model, settings.load_options(), raw=settings.raw)
    return backend
