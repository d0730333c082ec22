"""Connections to Milvus (one client per URI and token in a process) and the names and filters the store uses."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from pathlib import Path

_BS = chr(92)


def literal(value: str) -> str:
    """A Milvus filter string literal."""
    return '"' + value.replace(_BS, _BS + _BS).replace('"', _BS + '"') + '"'


def filter_in(field_name: str, values: Sequence[str]) -> str:
    """`field in ["a", "b"]` (false for no values)."""
    return f"{field_name} in [{', '.join(literal(v) for v in values)}]" if values else "false"


def collection_base(kb: str) -> str:
    """Collection-name prefix of a knowledge base (Milvus names allow only [A-Za-z0-9_])."""
    readable = re.sub(r"[^A-Za-z0-9_]", "_", kb)[:40]
    return f"rag_{readable}_{hashlib.sha1(kb.encode()).hexdigest()[:8]}"


def milvus_uri(settings) -> str:
    """The configured URI; "" means Milvus Lite in `<index_dir>/milvus.db`."""
    uri = settings.milvus_uri or str(Path(settings.index_dir) / "milvus.db")
    if uri.endswith(".db"):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    return uri


_CLIENTS: dict[tuple[str, str], object] = {}
_CLIENTS_LOCK = threading.Lock()


def connect(settings):
    """The process-wide Milvus client for these settings (Milvus Lite allows one process per `.db`)."""
    from pymilvus import MilvusClient

    key = (milvus_uri(settings), settings.milvus_token)
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            uri, token = key
            try:
                _CLIENTS[key] = MilvusClient(uri=uri, token=token) if token else MilvusClient(uri=uri)
            except Exception as e:  # noqa: BLE001 - pymilvus raises several types for "cannot connect/open"
                hint = (" (Milvus Lite opens a .db in one process at a time: is the app or another ingest using it?)"
                        if uri.endswith(".db") else "")
                raise OSError(f"cannot open Milvus at {uri}: {e}{hint}") from e
        return _CLIENTS[key]


def disconnect(settings) -> None:
    """Close this process's client for these settings (frees a Milvus Lite `.db` for another process)."""
    uri = milvus_uri(settings)
    with _CLIENTS_LOCK:
        client = _CLIENTS.pop((uri, settings.milvus_token), None)
    if client is not None:
        client.close()
    if uri.endswith(".db"):  # stop the embedded server, which holds the file lock
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(uri)
