"""`pianosynth serve`: the local page, until Ctrl-C."""

from __future__ import annotations

import argparse
import sys

from . import UserError, limits, warn


def cmd_serve(args: argparse.Namespace) -> int:
    """The local page (pianosynth.serve), until Ctrl-C."""
    try:
        from ..serve import serve
    except ImportError as e:
        raise UserError(f"serve needs Starlette and uvicorn ({e.name} is missing): pip install 'pianosynth[serve]'") from e
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"serving on {args.host}: anyone who can reach this machine can render with it")
    print(f"pianosynth page on http://{args.host}:{args.port}/ (Ctrl-C stops it)", file=sys.stderr)
    serve(args.host, args.port, max_upload_bytes=int(args.max_upload_mb * 2**20), max_seconds=args.max_seconds, threads=args.threads, limits=limits(args))
    return 0
