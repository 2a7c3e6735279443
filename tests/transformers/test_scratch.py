"""Scratch folders: one per transformer process, and what a killed process left is swept at the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from transformers.scratch import Scratch, sweep

# A transformer process that dies mid-work: it opens its scratch folder, writes, and is killed.
_DYING = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from transformers.scratch import Scratch
    scratch = Scratch.open(Path(sys.argv[1]), "gdal")
    (scratch.path / "output.tif").write_bytes(b"x" * 1000)
    print(scratch.path, flush=True)
    time.sleep(60)
    """
)


def test_a_killed_processes_files_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    root = tmp_path / "scratch"
    dying = subprocess.Popen(
        [sys.executable, "-c", _DYING, str(root)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    assert dying.stdout is not None
    dead_folder = Path(dying.stdout.readline().strip())
    live = Scratch.open(root, "netcdf")  # a replica alive on the same root: its sweep must spare the other
    assert dead_folder.is_dir() and (dead_folder / "output.tif").is_file()
    os.kill(dying.pid, signal.SIGKILL)
    dying.wait(timeout=10)

    (live.path / "working.nc").write_bytes(b"y")
    restarted = Scratch.open(root, "gdal")  # the killed one comes back
    try:
        assert not dead_folder.exists()
        assert (live.path / "working.nc").is_file()  # the live replica's work is untouched
        assert sweep(root) == 0
    finally:
        restarted.close()
        live.close()
    assert list(root.iterdir()) == []
