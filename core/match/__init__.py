"""Extent-map reconstruction from VHD structure (design.md "Reconstruction when metadata is lost").

features.py   per-PE evidence read once (heads, tails, 4 KiB-lattice signatures), SectorReader
anchors.py    VHD heads at PE starts: footer, header, BAT, batmap
predict.py    what every LE of an anchored LV must hold (bitmaps, straddling blocks, footer)
score.py      evidence of a candidate PE for a predicted LE
zerofill.py   whether unwritten sectors read zero, measured per VDI and image (never assumed)
assign.py     the solver (state and driver), its steps in:
  board.py      placements, named confidence levels, scoring a candidate with its neighbours
  walks.py      walks along runs
  search.py     frontier searches, joint choice, islands
  review.py     the second look, the final review, withdrawal of guesses on reused disks
  footers.py    footers (old ones, sm's sizes, LVM's allocation order) and gaps
joint.py      slots that compete for the same PEs, chosen together (marginal probabilities)
reconstruct.py  reconstruct(ev, ...) -> Reconstruction (.to_json() is `reconstruct --json`)
restore.py    the vgcfgrestore file and the xe commands that bring the SR back
synth.py      synthetic VHD LVs laid on a PE grid (tests, benchmark)
"""
