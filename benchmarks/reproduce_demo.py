"""Wall time of the README's main command, `wrapperlens reproduce --preset demo`, from an empty
output directory (run by hand on an idle machine: `python benchmarks/reproduce_demo.py`).

Target: at most 5 minutes on 2 CPU cores, Python start-up, every run, the analyses, results.json
and report.html included. The command's own output (its claims table) is shown as it runs.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 300


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo"
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "wrapperlens", "reproduce", "--preset", "demo",
                        "--out", str(out), "--no-progress"], check=True)
        seconds = time.perf_counter() - start
        size = (out / "report.html").stat().st_size
    verdict = "within" if seconds <= TARGET_SECONDS else "OVER"
    print(f"\nreproduce --preset demo: {seconds:.0f} s wall ({verdict} the {TARGET_SECONDS} s "
          f"target); report.html {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
