#!/usr/bin/env python
"""MPI-INF-3DHP: explain how to obtain it, convert the multiview training set, check.

Gated: request access at https://vcai.mpi-inf.mpg.de/3dhp-dataset/ (non-commercial research
licence, no redistribution), then run the official get_dataset.sh into RAW so that
RAW/S<1-8>/Seq<1,2>/{annot.mat, camera.calibration, imageSequence/video_<c>.avi} exist.
Disk: ~2 GB per sequence for 8 cameras (~25-45 GB); converted (cameras 0 1 2 4 5 6 7 8 at 512x512,
every 10th frame) ~70 GB, ~17 GB at --image-size 256x256. Time: hours of video decoding on 2 cores.

    python data_scripts/mpi_inf_3dhp.py fetch --raw RAW      (checks RAW and lists what is missing)
    python data_scripts/mpi_inf_3dhp.py convert --raw RAW --out OUT [--step 10 --cameras 0 1 2 4 5 6 7 8]
    python data_scripts/mpi_inf_3dhp.py check OUT
"""

from __future__ import annotations

import sys

from mvbook.data.cli import main_for_dataset

if __name__ == "__main__":
    sys.exit(main_for_dataset("mpi_inf_3dhp"))
