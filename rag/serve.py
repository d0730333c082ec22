"""`python -m rag.serve [--host 127.0.0.1] [--port 8000] [--config FILE] [--index-dir DIR] [--insecure]`.

The HTTP API (rag/api): OpenAI-compatible chat with citations, retrieval and knowledge-base admin.
Without RAG_API_KEY the server only listens on a loopback address, unless --insecure says otherwise.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys
from pathlib import Path

EXAMPLE = """examples:
  python -m rag.serve                                  # http://127.0.0.1:8000, no key needed on loopback
  RAG_API_KEY=secret python -m rag.serve --host 0.0.0.0
  curl -s localhost:8000/v1/chat/completions -H 'content-type: application/json' \\
       -d '{"model": "sample", "messages": [{"role": "user", "content": "默认端口是多少？"}]}'
"""


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rag.serve", description=__doc__.splitlines()[2], epilog=EXAMPLE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--config", type=Path, help="TOML of settings (default: $RAG_CONFIG)")
    parser.add_argument("--index-dir", type=Path)
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback --host without RAG_API_KEY (anyone who can reach it can use it)")
    parser.add_argument("--log-level", default="info")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    from rag.settings import load_settings

    try:
        settings = load_settings(args.config, index_dir=args.index_dir)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: invalid settings: {e}", file=sys.stderr)
        return 2
    if not settings.api_key.get_secret_value() and not is_loopback(args.host) and not args.insecure:
        print(f"error: refusing to listen on {args.host} without an API key: set RAG_API_KEY "
              "(or pass --insecure to serve anyone who can reach this port)", file=sys.stderr)
        return 2
    import uvicorn

    from rag.api.app import create_app

    print(f"rag.serve: http://{args.host}:{args.port}  (knowledge bases in {settings.index_dir}; "
          f"API key {'required' if settings.api_key.get_secret_value() else 'not set'})", flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
