"""Serve the live demo page: ``ca2vdm serve`` (also ``ca2vdm-serve``; ca2vdm/cli/serve.py), every flag the same.

    python infer/serve.py                                  # the shipped model at http://127.0.0.1:7860/
"""
from ca2vdm.cli.serve import main

if __name__ == "__main__":
    main()
