"""RFC 9162 section 2.1 Merkle tree: hashes, inclusion and consistency proofs, and their verification.

``MTH({}) = SHA-256()``, ``MTH({d}) = SHA-256(0x00 || d)``, and for ``n > 1`` with ``k`` the largest
power of two smaller than ``n``: ``MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n]))``.

Proof *generation* is written against a node source: every hash a proof needs is the hash of a
range ``[lo, hi)`` of leaves that the RFC's recursion produces, and each such range splits into
*perfect* subtrees (``2**level`` leaves starting at ``index * 2**level``).  :func:`inclusion_ranges`
and :func:`consistency_ranges` list the ranges, :func:`perfect_subtrees` the perfect subtrees of a
range, and :func:`range_hash` folds their hashes back together.  The store fetches exactly the
perfect subtrees it needs in one query.  :class:`CompactRange` appends leaves one at a time and
reports every perfect subtree that is completed, which is how the store builds its node table.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "ProofError",
    "consistency_proof",
    "consistency_ranges",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "perfect_subtrees",
    "range_hash",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

#: A perfect subtree: (level, index) covers leaves [index * 2**level, (index + 1) * 2**level).
Node = tuple[int, int]
NodeSource = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof that does not verify, or arguments that no valid proof can have."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


# --------------------------------------------------------------------------------------- building
class CompactRange:
    """The perfect subtrees that cover leaves ``[0, size)``, largest first: enough to append leaves
    and to compute the root at any time, in O(log n) memory."""

    __slots__ = ("_hashes", "size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if len(hashes) != size.bit_count():
            raise ValueError(f"a compact range of size {size} has {size.bit_count()} hashes, not {len(hashes)}")
        self.size = size
        self._hashes = list(hashes)

    @staticmethod
    def nodes_of(size: int) -> list[Node]:
        """The (level, index) of the perfect subtrees that cover [0, size), largest first."""
        return perfect_subtrees(0, size)

    @property
    def hashes(self) -> list[bytes]:
        return list(self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add one leaf hash; returns the perfect subtrees of level >= 1 that it completes as
        ``(level, index, hash)``."""
        completed: list[tuple[int, int, bytes]] = []
        h = leaf
        index = self.size
        level = 0
        while index & 1:
            h = node_hash(self._hashes.pop(), h)
            index >>= 1
            level += 1
            completed.append((level, index, h))
        self._hashes.append(h)
        self.size += 1
        return completed

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        if not self._hashes:
            return EMPTY_ROOT
        h = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            h = node_hash(left, h)
        return h


def root_from_leaf_hashes(leaves: Iterable[bytes]) -> bytes:
    cr = CompactRange()
    cr.extend(leaves)
    return cr.root()


# --------------------------------------------------------------------------------------- ranges
def perfect_subtrees(lo: int, hi: int) -> list[Node]:
    """The perfect subtrees that the RFC 9162 recursion splits ``[lo, hi)`` into, left to right.

    ``lo`` must be a multiple of the largest power of two not above ``hi - lo`` (true of every range
    that :func:`inclusion_ranges` and :func:`consistency_ranges` produce)."""
    if not 0 <= lo < hi:
        raise ValueError(f"bad range [{lo}, {hi})")
    nodes: list[Node] = []
    while lo < hi:
        n = hi - lo
        size = 1 << (n.bit_length() - 1)  # largest power of two <= n
        level = size.bit_length() - 1
        if lo % size:
            raise ValueError(f"range [{lo}, {hi}) is not aligned to a tree split")
        nodes.append((level, lo >> level))
        lo += size
    return nodes


def range_hash(lo: int, hi: int, node: NodeSource) -> bytes:
    """MTH(D[lo:hi]) from the hashes of its perfect subtrees."""
    hashes = [node(level, index) for level, index in perfect_subtrees(lo, hi)]
    h = hashes[-1]
    for left in reversed(hashes[:-1]):
        h = node_hash(left, h)
    return h


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The ranges whose MTH form PATH(index, D[size]) (RFC 9162 2.1.3.1), in proof order."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    out: list[tuple[int, int]] = []

    def path(m: int, lo: int, hi: int) -> None:
        n = hi - lo
        if n == 1:
            return
        k = _split(n)
        if m < k:
            path(m, lo, lo + k)
            out.append((lo + k, hi))
        else:
            path(m - k, lo + k, hi)
            out.append((lo, lo + k))

    path(index, 0, size)
    return out


def consistency_ranges(old: int, new: int) -> list[tuple[int, int]]:
    """The ranges whose MTH form PROOF(old, D[new]) (RFC 9162 2.1.4.1), in proof order.

    Empty when ``old == new`` or ``old == 0`` (nothing to prove)."""
    if not 0 <= old <= new:
        raise ProofError(f"old size {old} must be between 0 and new size {new}")
    out: list[tuple[int, int]] = []
    if old in (0, new):
        return out

    def subproof(m: int, lo: int, hi: int, whole: bool) -> None:
        n = hi - lo
        if m == n:
            if not whole:
                out.append((lo, hi))
            return
        k = _split(n)
        if m <= k:
            subproof(m, lo, lo + k, whole)
            out.append((lo + k, hi))
        else:
            subproof(m - k, lo + k, hi, False)
            out.append((lo, lo + k))

    subproof(old, 0, new, True)
    return out


def inclusion_proof(index: int, size: int, node: NodeSource) -> list[bytes]:
    return [range_hash(lo, hi, node) for lo, hi in inclusion_ranges(index, size)]


def consistency_proof(old: int, new: int, node: NodeSource) -> list[bytes]:
    return [range_hash(lo, hi, node) for lo, hi in consistency_ranges(old, new)]


# --------------------------------------------------------------------------------------- verifying
def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_SIZE}")


def _sides(fn: int, sn: int, count: int, what: str) -> list[bool]:
    """The walk up the tree that RFC 9162 2.1.3.2 and 2.1.4.2 share: starting at node ``fn`` of a tree whose
    last node is ``sn``, for each of ``count`` proof hashes whether it is the left sibling (hashed before the
    running value) or the right one; :class:`ProofError` when the proof is longer or shorter than the walk."""
    sides: list[bool] = []
    for _ in range(count):
        if sn == 0:
            raise ProofError(f"{what} proof is too long")
        left = bool(fn & 1) or fn == sn
        sides.append(left)
        if left and not fn & 1:
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"{what} proof is too short")
    return sides


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 2.1.3.2: raise :class:`ProofError` unless ``proof`` proves ``leaf`` at ``index``
    in the tree of ``size`` leaves with ``root``."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    _check_hash("leaf hash", leaf)
    _check_hash("root", root)
    for p in proof:
        _check_hash("proof hash", p)
    r = leaf
    for p, left in zip(proof, _sides(index, size - 1, len(proof), "inclusion"), strict=True):
        r = node_hash(p, r) if left else node_hash(r, p)
    if r != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(old: int, new: int, proof: Sequence[bytes], old_root: bytes, new_root: bytes) -> None:
    """RFC 9162 2.1.4.2: raise :class:`ProofError` unless ``proof`` shows that the tree of ``old``
    leaves with ``old_root`` is a prefix of the tree of ``new`` leaves with ``new_root``."""
    if not 0 < old <= new:
        raise ProofError(f"old size {old} must be between 1 and new size {new} (nothing is proved about an empty tree)")
    if old == new:
        if proof:
            raise ProofError("sizes are equal: the proof must be empty")
        if old_root != new_root:
            raise ProofError("sizes are equal but the roots differ")
        return
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    for p in proof:
        _check_hash("proof hash", p)
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if old & (old - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        path.insert(0, old_root)
    fn, sn = old - 1, new - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c, left in zip(path[1:], _sides(fn, sn, len(path) - 1, "consistency"), strict=True):
        if left:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
        else:
            sr = node_hash(sr, c)
    if fr != old_root:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != new_root:
        raise ProofError("consistency proof does not lead to the new root")
