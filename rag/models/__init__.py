"""Bundled models: provisioning into a local cache and cached loaders."""
