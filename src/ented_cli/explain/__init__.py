"""`ented explain`: which input pixels and which reference pixels a restored face relies on.

measure.py       the σ-entropy measure (Cheng et al., CVPR 2020), adapted to restoration; no I/O
regions.py       face regions (whole face, eyes, nose, mouth, skin) on the aligned 256 crop
model_adapter.py the one place that knows how to call a restorer's network
picture.py       the explanation picture (heat maps + bar chart of R), drawn with OpenCV
runner.py        read → detect/align → measure → picture + JSON, per input
command.py       the click command (imports only click at load time)
"""

REGIONS = ("face", "eyes", "nose", "mouth", "skin")  # output regions, see regions.py
