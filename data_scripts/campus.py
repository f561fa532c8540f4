#!/usr/bin/env python
"""Campus (Belagiannis et al. CVPR 2014): download, convert, check.

Source: https://campar.in.tum.de/Chair/MultiHumanPose (TU Munich), archive CampusSeq1.tar.bz2
(~1 GB) with Camera0..2 PNG frames, actorsGT.mat and Calibration/P*.txt; plus VoxelPose's
calibration_campus.json from github.com/microsoft/voxelpose-pytorch.
Licence: research use, cite the paper (check the page's terms).
Disk: archive ~1 GB + extracted ~1 GB; converted evaluation ranges (frames 350-470 and 650-750,
3 views at 360x288) ~0.2 GB. Time: minutes once downloaded.

    python data_scripts/campus.py fetch --raw RAW
    python data_scripts/campus.py convert --raw RAW --out OUT [--frames eval|all]
    python data_scripts/campus.py check OUT
"""

from __future__ import annotations

import sys

from mvbook.data.cli import main_for_dataset

if __name__ == "__main__":
    sys.exit(main_for_dataset("campus"))
