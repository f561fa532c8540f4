#!/usr/bin/env python
"""CMU Panoptic Studio: download HD views, convert, check.

Source: http://domedb.perception.cs.cmu.edu/ (Joo et al. ICCV 2015 / TPAMI 2017), files laid out
as panoptic-toolbox getData.sh does (calibration_<seq>.json, hdPose3d_stage1_coco19.tar,
hdVideos/hd_00_XX.mp4). Licence: non-commercial research use; cite the Panoptic papers (read the
terms on the site before downloading).
Disk: VoxelPose's 14 sequences x HD cameras 3, 6, 12, 13, 23 are ~100-200 GB of video; the
converted folder at 960x540 is ~1.5 MB x 5 views per sample (~160 GB with intervals 3/12; use
--interval, --image-size or --max-frames for less). Time: download is bound by the server
(~0.2-1 MB/s per file is common); conversion decodes every video once (~1-3 h on 2 cores).

    python data_scripts/panoptic.py fetch --raw RAW [--sequences 160906_pizza1 ...] [--cameras 3 6 12 13 23]
    python data_scripts/panoptic.py convert --raw RAW --out OUT [--image-size 960x540] [--interval 12]
    python data_scripts/panoptic.py check OUT        (or RAW: what is missing and how to get it)

Downloads resume (HTTP Range) after an interruption, retry a bounded number of times and record
sha256 digests in RAW/SHA256SUMS; raw files are never modified or deleted.
"""

from __future__ import annotations

import sys

from mvbook.data.cli import main_for_dataset

if __name__ == "__main__":
    sys.exit(main_for_dataset("panoptic"))
