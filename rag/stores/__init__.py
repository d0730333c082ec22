"""Store backends behind `rag.store.Store`: `files` (the default) and `milvus`."""
