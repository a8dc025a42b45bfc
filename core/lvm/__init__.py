"""LVM2 archaeology: labels, metadata areas, every metadata generation, the VG model.

  crc.py          LVM's CRC-32 variant (lvm_crc)
  textformat.py   libdm-config syntax alone: parser (parse_config) and ConfigWriter
  model.py        VGMetadata / LogicalVolume / Segment (one generation's content) and
                  VolumeGroup / PhysicalVolume / Generation / Copy (what the disk holds)
  writer.py       the VG writer beside the model: VGMetadata -> lvm2 text (format_vg_metadata)
  label.py        label sector + PV header: find, parse, build
  mda.py          mda header parse/build, ring placement, scan of every copy in a ring
  generations.py  copies -> generations -> volume groups; deleted / claimed_by
  analyse.py      analyse_disk(ev) -> DiskReport (pure LVM; core.sr adds XenServer's meaning)
"""
