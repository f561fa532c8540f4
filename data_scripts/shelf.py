#!/usr/bin/env python
"""Shelf (Belagiannis et al. CVPR 2014): download, convert, check.

Source: https://campar.in.tum.de/Chair/MultiHumanPose (TU Munich), archive Shelf.tar.bz2
(~2.6 GB) with Camera0..4 PNG frames, actorsGT.mat (14-joint 3D in metres) and Calibration/P*.txt;
plus VoxelPose's calibration_shelf.json (with distortion) from github.com/microsoft/voxelpose-pytorch.
Licence: research use, cite the paper (check the page's terms).
Disk: archive 2.6 GB + extracted ~3 GB; converted evaluation range (frames 300-600, 5 views at
516x388) ~0.9 GB. Time: minutes once downloaded.

    python data_scripts/shelf.py fetch --raw RAW
    python data_scripts/shelf.py convert --raw RAW --out OUT [--frames eval|all] [--calibration auto|json|projection]
    python data_scripts/shelf.py check OUT
"""

from __future__ import annotations

import sys

from mvbook.data.cli import main_for_dataset

if __name__ == "__main__":
    sys.exit(main_for_dataset("shelf"))
