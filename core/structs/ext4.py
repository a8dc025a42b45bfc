"""ext4 and jbd2 on-disk structures (what a guest's Linux file system holds).

Field names are the kernel's: Linux `fs/ext4/ext4.h` (struct ext4_super_block, ext4_group_desc,
ext4_inode, ext4_dir_entry_tail, dx_tail), `fs/ext4/ext4_extents.h` (ext4_extent_header,
ext4_extent, ext4_extent_idx, ext4_extent_tail), `fs/ext4/namei.c` (dx_root_info, dx_countlimit)
and `include/linux/jbd2.h` (journal_superblock_t); e2fsprogs `lib/ext2fs/ext2_fs.h` and
`lib/ext2fs/kernel-jbd.h` declare the same layouts.  ext4 integers are little-endian, jbd2's
big-endian.
"""

from __future__ import annotations

from construct import (Array, Bytes, Int8ul, Int16ul, Int32ub, Int32ul, Int64ul,
                       Padding, Struct)

EXT4_SUPER_MAGIC = 0xEF53          # ext4.h EXT4_SUPER_MAGIC
SUPERBLOCK_OFFSET = 1024           # the primary superblock lives 1024 bytes into the device
SUPERBLOCK_SIZE = 1024
EXT4_MIN_BLOCK_LOG_SIZE = 10       # 1 KiB blocks; ext4.h EXT4_MAX_BLOCK_LOG_SIZE is 16
EXT4_MAX_BLOCK_LOG_SIZE = 16
EXT4_GOOD_OLD_INODE_SIZE = 128
EXT4_MIN_DESC_SIZE = 32
EXT4_MIN_DESC_SIZE_64BIT = 64
EXT4_DESC_SIZE_MAX = 1024          # ext4.h EXT4_MAX_DESC_SIZE (EXT4_MIN_BLOCK_SIZE)

# s_feature_compat (ext4.h EXT4_FEATURE_COMPAT_*)
COMPAT_HAS_JOURNAL = 0x0004
COMPAT_SPARSE_SUPER2 = 0x0200
# s_feature_incompat
INCOMPAT_META_BG = 0x0010
INCOMPAT_EXTENTS = 0x0040
INCOMPAT_64BIT = 0x0080
INCOMPAT_FLEX_BG = 0x0200
INCOMPAT_CSUM_SEED = 0x2000
INCOMPAT_INLINE_DATA = 0x8000
# s_feature_ro_compat
RO_COMPAT_SPARSE_SUPER = 0x0001
RO_COMPAT_GDT_CSUM = 0x0010
RO_COMPAT_BIGALLOC = 0x0200
RO_COMPAT_METADATA_CSUM = 0x0400

# bg_flags (ext4.h EXT4_BG_*)
EXT4_BG_INODE_UNINIT = 0x0001
EXT4_BG_BLOCK_UNINIT = 0x0002

# i_flags (ext4.h EXT4_*_FL)
EXT4_INDEX_FL = 0x00001000
EXT4_EXTENTS_FL = 0x00080000
EXT4_INLINE_DATA_FL = 0x10000000
S_IFMT = 0o170000
S_IFDIR = 0o040000
S_IFREG = 0o100000

ext4_super_block = Struct(
    "s_inodes_count" / Int32ul,            # 0x00
    "s_blocks_count_lo" / Int32ul,
    "s_r_blocks_count_lo" / Int32ul,
    "s_free_blocks_count_lo" / Int32ul,
    "s_free_inodes_count" / Int32ul,       # 0x10
    "s_first_data_block" / Int32ul,
    "s_log_block_size" / Int32ul,
    "s_log_cluster_size" / Int32ul,
    "s_blocks_per_group" / Int32ul,        # 0x20
    "s_clusters_per_group" / Int32ul,
    "s_inodes_per_group" / Int32ul,
    "s_mtime" / Int32ul,
    "s_wtime" / Int32ul,                   # 0x30
    "s_mnt_count" / Int16ul,
    "s_max_mnt_count" / Int16ul,
    "s_magic" / Int16ul,
    "s_state" / Int16ul,
    "s_errors" / Int16ul,
    "s_minor_rev_level" / Int16ul,
    "s_lastcheck" / Int32ul,               # 0x40
    "s_checkinterval" / Int32ul,
    "s_creator_os" / Int32ul,
    "s_rev_level" / Int32ul,
    "s_def_resuid" / Int16ul,              # 0x50
    "s_def_resgid" / Int16ul,
    "s_first_ino" / Int32ul,
    "s_inode_size" / Int16ul,
    "s_block_group_nr" / Int16ul,          # 0x5A: which group this copy sits in
    "s_feature_compat" / Int32ul,
    "s_feature_incompat" / Int32ul,        # 0x60
    "s_feature_ro_compat" / Int32ul,
    "s_uuid" / Bytes(16),                  # 0x68
    "s_volume_name" / Bytes(16),           # 0x78
    "s_last_mounted" / Bytes(64),          # 0x88
    "s_algorithm_usage_bitmap" / Int32ul,  # 0xC8
    "s_prealloc_blocks" / Int8ul,
    "s_prealloc_dir_blocks" / Int8ul,
    "s_reserved_gdt_blocks" / Int16ul,
    "s_journal_uuid" / Bytes(16),          # 0xD0
    "s_journal_inum" / Int32ul,            # 0xE0
    "s_journal_dev" / Int32ul,
    "s_last_orphan" / Int32ul,
    "s_hash_seed" / Array(4, Int32ul),
    "s_def_hash_version" / Int8ul,         # 0xFC
    "s_jnl_backup_type" / Int8ul,
    "s_desc_size" / Int16ul,
    "s_default_mount_opts" / Int32ul,      # 0x100
    "s_first_meta_bg" / Int32ul,
    "s_mkfs_time" / Int32ul,
    "s_jnl_blocks" / Array(17, Int32ul),   # 0x10C: backup of the journal inode's i_block + size
    "s_blocks_count_hi" / Int32ul,         # 0x150
    "s_r_blocks_count_hi" / Int32ul,
    "s_free_blocks_count_hi" / Int32ul,
    "s_min_extra_isize" / Int16ul,
    "s_want_extra_isize" / Int16ul,
    "s_flags" / Int32ul,                   # 0x160
    "s_raid_stride" / Int16ul,
    "s_mmp_update_interval" / Int16ul,
    "s_mmp_block" / Int64ul,
    "s_raid_stripe_width" / Int32ul,       # 0x170
    "s_log_groups_per_flex" / Int8ul,
    "s_checksum_type" / Int8ul,
    "s_encryption_level" / Int8ul,
    "s_reserved_pad" / Int8ul,
    "s_kbytes_written" / Int64ul,          # 0x178
    "s_snapshot_inum" / Int32ul,           # 0x180
    "s_snapshot_id" / Int32ul,
    "s_snapshot_r_blocks_count" / Int64ul,
    "s_snapshot_list" / Int32ul,           # 0x190
    "s_error_count" / Int32ul,
    "s_first_error_time" / Int32ul,
    "s_first_error_ino" / Int32ul,
    "s_first_error_block" / Int64ul,       # 0x1A0
    "s_first_error_func" / Bytes(32),
    "s_first_error_line" / Int32ul,        # 0x1C8
    "s_last_error_time" / Int32ul,
    "s_last_error_ino" / Int32ul,
    "s_last_error_line" / Int32ul,
    "s_last_error_block" / Int64ul,        # 0x1D8
    "s_last_error_func" / Bytes(32),
    "s_mount_opts" / Bytes(64),            # 0x200
    "s_usr_quota_inum" / Int32ul,          # 0x240
    "s_grp_quota_inum" / Int32ul,
    "s_overhead_clusters" / Int32ul,
    "s_backup_bgs" / Array(2, Int32ul),    # 0x24C: sparse_super2's two backup groups
    "s_encrypt_algos" / Bytes(4),
    "s_encrypt_pw_salt" / Bytes(16),       # 0x258
    "s_lpf_ino" / Int32ul,                 # 0x268
    "s_prj_quota_inum" / Int32ul,
    "s_checksum_seed" / Int32ul,           # 0x270: crc32c(~0, uuid) kept when CSUM_SEED is set
    "s_time_hi" / Bytes(8),                # s_wtime_hi .. s_last_error_errcode
    "s_encoding" / Int16ul,                # 0x27C
    "s_encoding_flags" / Int16ul,
    "s_orphan_file_inum" / Int32ul,        # 0x280
    "s_reserved" / Bytes(94 * 4),
    "s_checksum" / Int32ul,                # 0x3FC: crc32c(~0, superblock up to here)
)
S_CHECKSUM_OFFSET = 0x3FC
S_BLOCK_GROUP_NR_OFFSET = 0x5A
S_UUID_OFFSET = 0x68

ext4_group_desc = Struct(
    "bg_block_bitmap_lo" / Int32ul,        # 0x00
    "bg_inode_bitmap_lo" / Int32ul,
    "bg_inode_table_lo" / Int32ul,
    "bg_free_blocks_count_lo" / Int16ul,
    "bg_free_inodes_count_lo" / Int16ul,
    "bg_used_dirs_count_lo" / Int16ul,     # 0x10
    "bg_flags" / Int16ul,
    "bg_exclude_bitmap_lo" / Int32ul,
    "bg_block_bitmap_csum_lo" / Int16ul,   # 0x18
    "bg_inode_bitmap_csum_lo" / Int16ul,
    "bg_itable_unused_lo" / Int16ul,
    "bg_checksum" / Int16ul,               # 0x1E
    # the rest exists when s_desc_size >= 64 (INCOMPAT_64BIT)
    "bg_block_bitmap_hi" / Int32ul,        # 0x20
    "bg_inode_bitmap_hi" / Int32ul,
    "bg_inode_table_hi" / Int32ul,
    "bg_free_blocks_count_hi" / Int16ul,
    "bg_free_inodes_count_hi" / Int16ul,
    "bg_used_dirs_count_hi" / Int16ul,     # 0x30
    "bg_itable_unused_hi" / Int16ul,
    "bg_exclude_bitmap_hi" / Int32ul,
    "bg_block_bitmap_csum_hi" / Int16ul,   # 0x38
    "bg_inode_bitmap_csum_hi" / Int16ul,
    "bg_reserved" / Int32ul,
)
BG_CHECKSUM_OFFSET = 0x1E
# ext4.h EXT4_BG_BLOCK_BITMAP_CSUM_HI_END / EXT4_BG_INODE_BITMAP_CSUM_HI_END: the high halves
# of the bitmap checksums exist only in descriptors at least this long
EXT4_BG_BLOCK_BITMAP_CSUM_HI_END = 0x3A
EXT4_BG_INODE_BITMAP_CSUM_HI_END = 0x3C

ext4_inode = Struct(
    "i_mode" / Int16ul,                    # 0x00
    "i_uid" / Int16ul,
    "i_size_lo" / Int32ul,
    "i_atime" / Int32ul,
    "i_ctime" / Int32ul,
    "i_mtime" / Int32ul,                   # 0x10
    "i_dtime" / Int32ul,
    "i_gid" / Int16ul,
    "i_links_count" / Int16ul,
    "i_blocks_lo" / Int32ul,
    "i_flags" / Int32ul,                   # 0x20
    "l_i_version" / Int32ul,
    "i_block" / Bytes(60),                 # 0x28: extent tree root (or block map / inline data)
    "i_generation" / Int32ul,              # 0x64
    "i_file_acl_lo" / Int32ul,
    "i_size_high" / Int32ul,
    "i_obso_faddr" / Int32ul,
    "l_i_blocks_high" / Int16ul,           # 0x74 (osd2.linux2)
    "l_i_file_acl_high" / Int16ul,
    "l_i_uid_high" / Int16ul,
    "l_i_gid_high" / Int16ul,
    "l_i_checksum_lo" / Int16ul,           # 0x7C
    "l_i_reserved" / Int16ul,
    "i_extra_isize" / Int16ul,             # 0x80: large inodes only
    "i_checksum_hi" / Int16ul,             # 0x82
)
I_CHECKSUM_LO_OFFSET = 0x7C
I_CHECKSUM_HI_OFFSET = 0x82
I_GENERATION_OFFSET = 0x64
I_BLOCK_OFFSET = 0x28

ext4_extent_header = Struct(
    "eh_magic" / Int16ul,
    "eh_entries" / Int16ul,
    "eh_max" / Int16ul,
    "eh_depth" / Int16ul,
    "eh_generation" / Int32ul,
)
EXT4_EXT_MAGIC = 0xF30A
ext4_extent = Struct(
    "ee_block" / Int32ul,
    "ee_len" / Int16ul,                    # > EXT_INIT_MAX_LEN: an unwritten extent
    "ee_start_hi" / Int16ul,
    "ee_start_lo" / Int32ul,
)
ext4_extent_idx = Struct(
    "ei_block" / Int32ul,
    "ei_leaf_lo" / Int32ul,
    "ei_leaf_hi" / Int16ul,
    "ei_unused" / Int16ul,
)
EXT_INIT_MAX_LEN = 1 << 15
ext4_extent_tail = Struct("et_checksum" / Int32ul)   # after eh_max entries

ext4_dir_entry_tail = Struct(             # the last 12 bytes of a checksummed leaf block
    "det_reserved_zero1" / Int32ul,        # looks like a dirent with inode 0
    "det_rec_len" / Int16ul,               # 12
    "det_reserved_zero2" / Int8ul,         # name_len 0
    "det_reserved_ft" / Int8ul,            # EXT4_FT_DIR_CSUM
    "det_checksum" / Int32ul,
)
EXT4_FT_DIR_CSUM = 0xDE
DIR_TAIL_SIZE = 12

dx_countlimit = Struct("limit" / Int16ul, "count" / Int16ul)
dx_tail = Struct("dt_reserved" / Int32ul, "dt_checksum" / Int32ul)
DX_ENTRY_SIZE = 8
# namei.c: dx_root is "." (12 bytes) + ".." whose 12-byte head is followed by dx_root_info
# (8 bytes): the count/limit of a root sits at 32, of an interior node after an 8-byte fake dirent
DX_ROOT_COUNT_OFFSET = 32
DX_NODE_COUNT_OFFSET = 8

# jbd2.h: journal_superblock_t, big-endian; the whole structure is 1024 bytes
JBD2_MAGIC_NUMBER = 0xC03B3998
JBD2_SUPERBLOCK_V1 = 3
JBD2_SUPERBLOCK_V2 = 4
JBD2_FEATURE_INCOMPAT_CSUM_V2 = 0x8
JBD2_FEATURE_INCOMPAT_CSUM_V3 = 0x10
journal_superblock_t = Struct(
    "h_magic" / Int32ub,
    "h_blocktype" / Int32ub,
    "h_sequence" / Int32ub,
    "s_blocksize" / Int32ub,               # 0x0C
    "s_maxlen" / Int32ub,
    "s_first" / Int32ub,
    "s_sequence" / Int32ub,                # 0x18
    "s_start" / Int32ub,
    "s_errno" / Int32ub,
    "s_feature_compat" / Int32ub,          # 0x24
    "s_feature_incompat" / Int32ub,
    "s_feature_ro_compat" / Int32ub,
    "s_uuid" / Bytes(16),                  # 0x30: e2fsprogs mkjournal copies the fs uuid here
    "s_nr_users" / Int32ub,                # 0x40
    "s_dynsuper" / Int32ub,
    "s_max_transaction" / Int32ub,
    "s_max_trans_data" / Int32ub,
    "s_checksum_type" / Int8ul,            # 0x50
    Padding(3),
    "s_num_fc_blks" / Int32ub,
    "s_head" / Int32ub,                    # 0x58
    Padding(40 * 4),
    "s_checksum" / Int32ub,                # 0xFC
    "s_users" / Bytes(16 * 48),            # 0x100
)
JBD2_CHECKSUM_OFFSET = 0xFC
JBD2_SUPERBLOCK_SIZE = 1024
