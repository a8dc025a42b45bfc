"""Extent-map reconstruction from VHD structure (design.md "Reconstruction when metadata is lost").

features.py   per-PE evidence read once (heads, tails, 4 KiB-lattice signatures), SectorReader
anchors.py    VHD heads at PE starts: footer, header, BAT, batmap
predict.py    what every LE of an anchored LV must hold (bitmaps, straddling blocks, footer)
score.py      evidence of a candidate PE for a predicted LE
assign.py     the solver: walks along runs, searches, islands, a second look at what was
              decided by adjacency alone, footers (sm's sizes, LVM's allocation order), gaps
joint.py      slots that compete for the same PEs, chosen together (marginal probabilities)
reconstruct.py  reconstruct(ev, ...) -> Reconstruction (.to_json() is `reconstruct --json`)
restore.py    the vgcfgrestore file and the xe commands that bring the SR back
synth.py      synthetic VHD LVs laid on a PE grid (tests, benchmark)
"""
