"""Serve the live demo page: each chunk's frames are streamed to the browser the moment they are denoised.

    python infer/serve.py                                  # the shipped model at http://127.0.0.1:7860/
    python infer/serve.py --checkpoint checkpoints/demo.safetensors checkpoints/latent-demo.safetensors --port 8000

One generation runs per device at a time; other pages wait in a queue of at most --max-queue. See docs/serve.md.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from ca2vdm.checkpoint import CheckpointError  # noqa: E402
from ca2vdm.cli import positive_int  # noqa: E402
from ca2vdm.codec import CodecError  # noqa: E402
from ca2vdm.generate import DEFAULT_CHECKPOINT  # noqa: E402
from ca2vdm.serve.protocol import MAX_UPLOAD_BYTES  # noqa: E402


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive_int, default=7860, help="port (default 7860)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--checkpoint", nargs="+", default=[str(DEFAULT_CHECKPOINT)],
                   help="one or more checkpoints offered on the page (default: the shipped demo model); the page "
                        "names each by its file name")
    p.add_argument("--max-chunks", type=positive_int, default=1000,
                   help="most chunks one generation may ask for; 'until stopped' ends there too (default 1000)")
    p.add_argument("--max-queue", type=non_negative_int, default=4,
                   help="most generations waiting for the device; more are refused with a message (default 4)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import uvicorn

    from ca2vdm.serve import create_app, load_catalog

    try:
        models = load_catalog(args.checkpoint, args.device)
    except (CheckpointError, CodecError, ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    app = create_app(models, max_chunks=args.max_chunks, max_queue=args.max_queue, device=args.device)
    print(f"serving {', '.join(models)} on {args.device} at http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, ws_max_size=MAX_UPLOAD_BYTES + 2 ** 20, log_level="warning")


if __name__ == "__main__":
    main()
