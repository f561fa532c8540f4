#!/usr/bin/env python
"""Human3.6M: explain how to obtain it, convert the official layout, check.

Gated: register at http://vision.imar.ro/human3.6m/ and accept the licence (academic,
non-commercial research use only, no redistribution). For each subject S1 S5 S6 S7 S8 S9 S11
download "Poses_D3_Positions_<S>.tgz" and "Videos_<S>.tgz" and extract them into RAW
(RAW/<S>/MyPoseFeatures/D3_Positions/*.cdf, RAW/<S>/Videos/*.<camera>.mp4); put the cameras
(R, T, f, c, k, p per subject and camera, from the official metadata) in RAW/cameras.json (both
accepted JSON layouts are described in `python data_scripts/h36m.py --help`). Reading .cdf needs
`pip install cdflib`; without it, put .npz exports (key 'Pose') next to the .cdf files.
Disk: ~70 GB raw; converted (4 views at 500x500, train every 5th frame, test every 64th: ~80k
samples) ~240 GB, ~63 GB at --image-size 256x256, half with --train-step 10. Time: several hours of video decoding on 2 cores.

    python data_scripts/h36m.py fetch --raw RAW      (checks RAW and lists what is missing)
    python data_scripts/h36m.py convert --raw RAW --out OUT [--train-step 5 --test-step 64 --image-size 500x500]
    python data_scripts/h36m.py check OUT
"""

from __future__ import annotations

import sys

from mvbook.data.cli import main_for_dataset

if __name__ == "__main__":
    sys.exit(main_for_dataset("h36m"))
