"""`tledit` with one partition writer paused before its rename, so a test can SIGKILL the run mid-write.

Usage: python tests/reliability/hold_writer.py ASSET:SHARD run --home ... (the rest is `tledit`'s arguments).
The pause lives here, in the tests, not in the engine: `os.replace` is wrapped for this process only.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> int:
    asset, shard = sys.argv[1].split(":")
    real_replace = os.replace

    def held_replace(src, dst, *args, **kwargs):
        dst = Path(dst)
        if dst.parent.name == f"shard={shard}" and dst.parent.parent.name == asset:
            time.sleep(600)  # the test kills the process during this pause
        return real_replace(src, dst, *args, **kwargs)

    os.replace = held_replace
    from assets.cli import main as tledit

    return tledit(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
