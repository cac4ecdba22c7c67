"""Test-only: pauses a Ray node's lake writer just before its partition becomes visible, so a test can kill it.

The test cluster's nodes (tests/ray_cluster.py) put this folder on PYTHONPATH with TLRAY_TEST_HOLDS (a
folder) and TLRAY_NODE (head or worker). A file `<holds>/any` or `<holds>/<node>` is claimed (renamed,
so only one writer takes it) by the next process of that node about to publish a lake partition; it writes
its pid to `<holds>/<name>.pid` and sleeps until it is killed. The pause lives here, in the tests, not in
the engine (as tests/reliability/hold_writer.py does for one process).
"""

import os

_HOLDS = os.environ.get("TLRAY_TEST_HOLDS")

if _HOLDS:
    import time

    _real_replace = os.replace

    def _held_replace(src, dst, *args, **kwargs):
        name = os.fspath(dst)
        if name.endswith("/data.parquet") and "/lake/" in name:
            for hold in ("any", os.environ.get("TLRAY_NODE", "")):
                path = os.path.join(_HOLDS, hold)
                try:
                    _real_replace(path, path + ".taken")
                except OSError:
                    continue
                with open(path + ".pid.tmp", "w") as fh:
                    fh.write(f"{os.getpid()} {name}")
                _real_replace(path + ".pid.tmp", path + ".pid")
                time.sleep(600)  # killed here by the test
        return _real_replace(src, dst, *args, **kwargs)

    os.replace = _held_replace
