"""``cnnkit serve RUN... [--host 127.0.0.1] [--port 8000]``: a local web app for trained runs
(``cnnkit.deploy.serve``): upload an image, see the prediction and the feature maps of a layer.
It listens on loopback unless ``--host`` says otherwise."""

from __future__ import annotations

import argparse
import sys


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload accepted")
    p.add_argument(
        "--max-pixels", type=int, default=40_000_000, help="largest image (width × height) decoded"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        from cnnkit.cli import CLIError

        raise CLIError("the app needs the optional extra: pip install 'cnnkit[serve]'") from None
    from cnnkit.deploy.serve import create_app, load_runs
    from cnnkit.deploy.uploads import UploadLimits

    runs = load_runs(args.runs)
    limits = UploadLimits(int(args.max_upload_mb * 2**20), args.max_pixels)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: reachable from other machines", file=sys.stderr)
    print(
        f"serving {', '.join(runs)} on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True
    )
    uvicorn.run(create_app(runs, limits), host=args.host, port=args.port, log_level="warning")
    return 0
