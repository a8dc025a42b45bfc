"""BLAKE2sp: the 8-way parallel BLAKE2s that RAR 5 stores as a file's hash (HASH extra record,
type 0) - Python's hashlib has BLAKE2s with its tree parameters, not BLAKE2sp itself.

The construction, as in the BLAKE2 reference code (BLAKE2/BLAKE2 `ref/blake2sp-ref.c`, also
libarchive `libarchive/archive_blake2sp_ref.c`, functions blake2sp_init / blake2sp_update /
blake2sp_final): the input is cut into 64-byte blocks and block k goes to leaf k mod 8; each leaf
is BLAKE2s with digest 32, fanout 8, depth 2, leaf length 0, node offset = its index, node depth
0, inner length 32, the last leaf flagged as the last node; the root is BLAKE2s with the same
parameters but node offset 0, node depth 1 and the last-node flag, over the eight leaf digests
in order. (The reference update dispatches whole 512-byte stripes and spreads the final partial
stripe block by block at finalisation, which is the same block-to-leaf assignment.)
"""

from __future__ import annotations

import hashlib

import numpy as np

PARALLELISM = 8
BLOCK = 64                          # BLAKE2s block bytes
STRIPE = PARALLELISM * BLOCK        # 512
DIGEST = 32


def _node(offset: int, depth: int, last: bool) -> "hashlib._Hash":
    return hashlib.blake2s(digest_size=DIGEST, fanout=PARALLELISM, depth=2, leaf_size=0,
                           node_offset=offset, node_depth=depth, inner_size=DIGEST,
                           last_node=last)


class Blake2sp:
    """Streaming BLAKE2sp: `update(bytes)` any number of times, then `digest()` / `hexdigest()`."""

    def __init__(self) -> None:
        self._leaves = [_node(i, 0, i == PARALLELISM - 1) for i in range(PARALLELISM)]
        self._pending = b""             # less than one stripe, not yet given to the leaves

    def update(self, data: bytes) -> None:
        data = self._pending + bytes(data) if self._pending else bytes(data)
        whole = len(data) - len(data) % STRIPE
        if whole:
            # stripes as rows of 8 blocks: column i is leaf i's share, one copy per leaf
            stripes = np.frombuffer(data, dtype=np.uint8, count=whole).reshape(-1, PARALLELISM,
                                                                               BLOCK)
            for i, leaf in enumerate(self._leaves):
                leaf.update(stripes[:, i, :].tobytes())
        self._pending = data[whole:]

    def digest(self) -> bytes:
        leaves = [leaf.copy() for leaf in self._leaves]
        tail = self._pending
        for i, leaf in enumerate(leaves):
            leaf.update(tail[i * BLOCK:(i + 1) * BLOCK])
        root = _node(0, 1, True)
        for leaf in leaves:
            root.update(leaf.digest())
        return root.digest()

    def hexdigest(self) -> str:
        return self.digest().hex()


def blake2sp(data: bytes) -> bytes:
    h = Blake2sp()
    h.update(data)
    return h.digest()
