//! The RFC 6962 Merkle tree: leaf and node hashes, the compact right edge, proofs and their checks.
//!
//! Proofs are generated over a [`HashSource`] that returns the hash of any aligned, complete subtree; the
//! tile store is one, an in-memory list of leaves (in tests) another.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A SHA-256 Merkle tree hash.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The leaf hash of an entry: SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two strictly smaller than `n` (n ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The right edge of a tree: one hash per set bit of its size, enough to append and to compute the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactRange {
    size: u64,
    /// Hashes of the complete subtrees, largest (leftmost) first.
    hashes: Vec<Hash>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> CompactRange {
        CompactRange::default()
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Builds the edge of a tree of `size` leaves from a source of subtree hashes.
    pub fn from_source(size: u64, source: &mut dyn HashSource) -> Result<CompactRange> {
        let mut hashes = Vec::new();
        let mut lo = 0u64;
        for level in (0..64u32).rev() {
            if size & (1u64 << level) != 0 {
                hashes.push(source.subtree(level, lo >> level)?);
                lo += 1u64 << level;
            }
        }
        Ok(CompactRange { size, hashes })
    }

    /// Appends a leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            if let Some(left) = self.hashes.pop() {
                h = node_hash(&left, &h);
            }
            s >>= 1;
        }
        self.hashes.push(h);
        self.size += 1;
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        let mut iter = self.hashes.iter().rev();
        let Some(first) = iter.next() else {
            return empty_root();
        };
        iter.fold(*first, |acc, left| node_hash(left, &acc))
    }
}

/// The root of a complete subtree over `hashes` (a power-of-two count), as tiles need.
pub fn subtree_root(hashes: &[Hash]) -> Hash {
    let mut range = CompactRange::new();
    for h in hashes {
        range.push(*h);
    }
    range.root()
}

/// Anything that can give the hash of the complete subtree at `level` (2^level leaves) with index `index`.
pub trait HashSource {
    /// The hash of leaves `[index << level, (index + 1) << level)`.
    fn subtree(&mut self, level: u32, index: u64) -> Result<Hash>;
}

/// MTH(D[lo:hi]) for a range that RFC 6962's recursion produces (complete subtrees are aligned).
fn range_hash(source: &mut dyn HashSource, lo: u64, hi: u64) -> Result<Hash> {
    let n = hi - lo;
    if n.is_power_of_two() && lo % n == 0 {
        return source.subtree(n.trailing_zeros(), lo >> n.trailing_zeros());
    }
    let k = split_point(n);
    let left = range_hash(source, lo, lo + k)?;
    let right = range_hash(source, lo + k, hi)?;
    Ok(node_hash(&left, &right))
}

/// The root of the tree of `size` leaves.
pub fn root_at(source: &mut dyn HashSource, size: u64) -> Result<Hash> {
    if size == 0 {
        return Ok(empty_root());
    }
    range_hash(source, 0, size)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 6962 section 2.1.1), leaf to root.
pub fn inclusion_proof(source: &mut dyn HashSource, index: u64, size: u64) -> Result<Vec<Hash>> {
    if index >= size {
        return Err(Error::OutOfRange {
            what: "index",
            value: index,
            size,
        });
    }
    let mut out = Vec::new();
    inclusion_rec(source, index, 0, size, &mut out)?;
    Ok(out)
}

fn inclusion_rec(
    source: &mut dyn HashSource,
    index: u64,
    lo: u64,
    hi: u64,
    out: &mut Vec<Hash>,
) -> Result<()> {
    if hi - lo <= 1 {
        return Ok(());
    }
    let k = split_point(hi - lo);
    if index < lo + k {
        inclusion_rec(source, index, lo, lo + k, out)?;
        out.push(range_hash(source, lo + k, hi)?);
    } else {
        inclusion_rec(source, index, lo + k, hi, out)?;
        out.push(range_hash(source, lo, lo + k)?);
    }
    Ok(())
}

/// The consistency proof between the trees of `old` and `new` leaves (RFC 6962 section 2.1.2).
pub fn consistency_proof(source: &mut dyn HashSource, old: u64, new: u64) -> Result<Vec<Hash>> {
    if old > new {
        return Err(Error::OutOfRange {
            what: "tree size",
            value: old,
            size: new,
        });
    }
    let mut out = Vec::new();
    if old == 0 || old == new {
        return Ok(out);
    }
    subproof(source, old, 0, new, true, &mut out)?;
    Ok(out)
}

fn subproof(
    source: &mut dyn HashSource,
    m: u64,
    lo: u64,
    hi: u64,
    whole: bool,
    out: &mut Vec<Hash>,
) -> Result<()> {
    let n = hi - lo;
    if m == n {
        if !whole {
            out.push(range_hash(source, lo, hi)?);
        }
        return Ok(());
    }
    let k = split_point(n);
    if m <= k {
        subproof(source, m, lo, lo + k, whole, out)?;
        out.push(range_hash(source, lo + k, hi)?);
    } else {
        subproof(source, m - k, lo + k, hi, false, out)?;
        out.push(range_hash(source, lo, lo + k)?);
    }
    Ok(())
}

/// Checks an inclusion proof (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::Proof(format!(
            "inclusion proof of entry {index} in size {size} fails: {why}"
        )))
    };
    if index >= size {
        return bad("the index is outside the tree");
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return bad("the proof is too long");
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return bad("the proof is too short");
    }
    if &r != root {
        return bad("the root hash differs");
    }
    Ok(())
}

/// Checks a consistency proof (RFC 9162 section 2.1.4.2).
pub fn verify_consistency(
    old: u64,
    old_root: &Hash,
    new: u64,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::Proof(format!(
            "consistency proof from size {old} to {new} fails: {why}"
        )))
    };
    if old > new {
        return bad("the old tree is larger");
    }
    if old == new {
        if !proof.is_empty() {
            return bad("the proof should be empty");
        }
        return if old_root == new_root {
            Ok(())
        } else {
            bad("the two roots of the same size differ")
        };
    }
    if old == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            bad("the proof should be empty")
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return bad("the proof is empty");
    };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return bad("the proof is too long");
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return bad("the proof is too short");
    }
    if &fr != old_root {
        return bad("the old root differs: the log was rewritten (a fork)");
    }
    if &sr != new_root {
        return bad("the new root differs");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaves in memory, subtrees computed naively: the reference the tile store is checked against.
    struct Leaves(Vec<Hash>);

    impl HashSource for Leaves {
        fn subtree(&mut self, level: u32, index: u64) -> Result<Hash> {
            let lo = (index << level) as usize;
            let hi = ((index + 1) << level) as usize;
            Ok(subtree_root(
                self.0
                    .get(lo..hi)
                    .ok_or_else(|| Error::Proof("out of range".into()))?,
            ))
        }
    }

    fn naive_root(leaves: &[Hash]) -> Hash {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&naive_root(&leaves[..k]), &naive_root(&leaves[k..]))
            }
        }
    }

    #[test]
    fn roots_and_proofs_agree_for_every_small_tree() {
        let leaves: Vec<Hash> = (0..40u32).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut src = Leaves(leaves.clone());
        let mut range = CompactRange::new();
        for size in 1..=leaves.len() as u64 {
            range.push(leaves[size as usize - 1]);
            let root = naive_root(&leaves[..size as usize]);
            assert_eq!(range.root(), root);
            assert_eq!(root_at(&mut src, size).unwrap(), root);
            assert_eq!(
                CompactRange::from_source(size, &mut src).unwrap().root(),
                root
            );
            for index in 0..size {
                let proof = inclusion_proof(&mut src, index, size).unwrap();
                verify_inclusion(&leaves[index as usize], index, size, &proof, &root).unwrap();
                let other = leaf_hash(b"other");
                assert!(verify_inclusion(&other, index, size, &proof, &root).is_err());
            }
            for old in 0..=size {
                let old_root = naive_root(&leaves[..old as usize]);
                let proof = consistency_proof(&mut src, old, size).unwrap();
                verify_consistency(old, &old_root, size, &root, &proof).unwrap();
                if old > 0 && old < size {
                    assert!(
                        verify_consistency(old, &leaf_hash(b"fork"), size, &root, &proof).is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn rfc_6962_empty_root() {
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    fn hex(h: &Hash) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }
}
