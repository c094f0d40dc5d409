"""``python -m u2seg <stage> ...`` (what the Snakemake rules call)."""
import sys

from u2seg.cli import main

sys.exit(main())
