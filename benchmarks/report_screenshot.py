"""The README's report screenshot: scikit-learn's digits against held-out digits without 3s and 8s, rendered in
headless Chromium (``apt-get install chromium-headless-shell``). A script, not a test.

    python benchmarks/report_screenshot.py      # writes docs/report.png (and the page to a temporary folder)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from fastndb import report
from fastndb.demo.runner import load_digits_tensor

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    names = ("chromium-headless-shell", "chromium", "google-chrome")
    browser = next((shutil.which(n) for n in names if shutil.which(n)), None)
    if browser is None:
        sys.exit("no headless Chromium found (apt-get install chromium-headless-shell)")
    x, y = load_digits_tensor()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    real = x[order[:1000]].reshape(-1, 1, 8, 8)
    pool, labels = x[order[1000:]], y[order[1000:]]
    fake = pool[~torch.isin(labels, torch.tensor([3, 8]))].reshape(-1, 1, 8, 8)
    built = report.build(real, fake, num_bins=20, max_flagged=3, examples=8)
    page = built.save(Path(tempfile.mkdtemp()) / "report.html")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={DOCS / 'report.png'}", "--window-size=1000,1500", page.as_uri()], check=True,
                   capture_output=True)
    print(built.verdict[0])
    print(f"wrote {DOCS / 'report.png'}")


if __name__ == "__main__":
    main()
