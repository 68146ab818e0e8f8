package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt's on-disk format (version 2), read here without bbolt so that a
// damaged file is reported instead of crashing the process: bbolt trusts the
// file and panics, or faults on its memory map, at the first bad page.
const (
	pageHeaderSize = 16 // id u64, flags u16, count u16, overflow u32
	elemSize       = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags, pos, ksize, vsize u32
	metaSize       = 64 // magic, version, page size, flags, root bucket (root, sequence), freelist, pgid, txid, checksum

	flagBranch   = 0x01
	flagLeaf     = 0x02
	flagMeta     = 0x04
	flagFreelist = 0x10
	bucketEntry  = 0x01

	boltMagic   = 0xED0CDAED
	boltVersion = 2
	noFreelist  = ^uint64(0)

	maxTreeDepth = 64 // a b-tree of 4 KiB pages is a handful of levels deep
)

var ne = binary.LittleEndian // every supported target (amd64, arm64) is little-endian, as bbolt writes native order

// Info describes a verified database file.
type Info struct {
	// Size is the file's size in bytes.
	Size int64
	// PageSize is the database's page size.
	PageSize int
	// Pages is the database's high-water mark in pages.
	Pages uint64
	// TxID is the last committed transaction: it grows with every commit.
	TxID uint64
}

// Verify checks that the bbolt file at path is structurally sound — both
// meta pages, the free list and every page of every bucket reachable from
// the root, with bounds, page types, key order and cycles checked — by
// reading the file with plain reads. It never panics on a damaged file; it
// returns an error saying what is wrong. The file must not be written while
// Verify runs (the store takes the file lock first).
func Verify(path string) (Info, error) {
	f, err := os.Open(path)
	if err != nil {
		return Info{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Info{}, err
	}
	return verify(f, fi.Size())
}

type verifier struct {
	r    io.ReaderAt
	size int64
	ps   int64
	hwm  uint64
	seen map[uint64]bool // every page a tree or the free list uses
}

func verify(r io.ReaderAt, size int64) (Info, error) {
	if size == 0 {
		return Info{}, errors.New("the file is empty (0 bytes)")
	}
	m, err := pickMeta(r, size)
	if err != nil {
		return Info{}, err
	}
	v := &verifier{r: r, size: size, ps: int64(m.pageSize), hwm: m.pgid, seen: map[uint64]bool{0: true, 1: true}}
	info := Info{Size: size, PageSize: int(m.pageSize), Pages: m.pgid, TxID: m.txid}
	if m.pgid < 4 {
		return info, fmt.Errorf("meta page: high-water mark %d is below the 4 pages of an empty database", m.pgid)
	}
	if need := int64(m.pgid) * v.ps; need/v.ps != int64(m.pgid) || need > size {
		return info, fmt.Errorf("truncated: the file is %d bytes but its meta page says the database spans %d pages of %d bytes", size, m.pgid, m.pageSize)
	}
	var free []uint64
	if m.freelist != noFreelist {
		if free, err = v.freelist(m.freelist); err != nil {
			return info, err
		}
	}
	if m.root < 2 || m.root >= m.pgid {
		return info, fmt.Errorf("meta page: root page %d outside the database (2..%d)", m.root, m.pgid-1)
	}
	if err := v.tree(m.root, 0, nil, nil); err != nil {
		return info, err
	}
	for _, id := range free {
		if v.seen[id] {
			return info, fmt.Errorf("free list: page %d is free but still in use", id)
		}
	}
	return info, nil
}

type metaPage struct {
	pageSize uint32
	root     uint64
	freelist uint64
	pgid     uint64
	txid     uint64
}

// readMeta decodes and checks the meta page at off.
func readMeta(r io.ReaderAt, off int64) (metaPage, error) {
	var buf [pageHeaderSize + metaSize]byte
	if _, err := r.ReadAt(buf[:], off); err != nil {
		return metaPage{}, fmt.Errorf("read: %w", err)
	}
	b := buf[pageHeaderSize:]
	if ne.Uint32(b[0:]) != boltMagic {
		return metaPage{}, errors.New("not a bbolt meta page (bad magic)")
	}
	if ne.Uint32(b[4:]) != boltVersion {
		return metaPage{}, fmt.Errorf("unsupported format version %d", ne.Uint32(b[4:]))
	}
	h := fnv.New64a()
	_, _ = h.Write(b[:56])
	if h.Sum64() != ne.Uint64(b[56:]) {
		return metaPage{}, errors.New("checksum mismatch")
	}
	m := metaPage{pageSize: ne.Uint32(b[8:]), root: ne.Uint64(b[16:]), freelist: ne.Uint64(b[32:]), pgid: ne.Uint64(b[40:]), txid: ne.Uint64(b[48:])}
	if ps := m.pageSize; ps < 1024 || ps > 1<<24 || ps&(ps-1) != 0 {
		return metaPage{}, fmt.Errorf("page size %d is not a power of two between 1 KiB and 16 MiB", ps)
	}
	return m, nil
}

// pickMeta chooses the meta page bbolt would use: the valid one with the
// higher transaction id.
func pickMeta(r io.ReaderAt, size int64) (metaPage, error) {
	m0, err0 := readMeta(r, 0)
	ps := int64(m0.pageSize)
	if err0 != nil {
		// Like bbolt, look for the second meta page at every page size.
		for ps = 1024; ps <= 1<<24 && ps < size; ps <<= 1 {
			if m1, err := readMeta(r, ps); err == nil && int64(m1.pageSize) == ps {
				return m1, nil
			}
		}
		return metaPage{}, fmt.Errorf("both meta pages are unreadable (first: %v)", err0)
	}
	m1, err1 := readMeta(r, ps)
	switch {
	case err1 != nil, m1.pageSize != m0.pageSize:
		return m0, nil
	case m1.txid > m0.txid:
		return m1, nil
	}
	return m0, nil
}

// page reads page id with its overflow pages, checking that it lies inside
// the database and names itself id.
func (v *verifier) page(id uint64) ([]byte, error) {
	if id < 2 || id >= v.hwm {
		return nil, fmt.Errorf("page %d: outside the database (2..%d)", id, v.hwm-1)
	}
	var hdr [pageHeaderSize]byte
	if _, err := v.r.ReadAt(hdr[:], int64(id)*v.ps); err != nil {
		return nil, fmt.Errorf("page %d: read: %w", id, err)
	}
	if got := ne.Uint64(hdr[0:]); got != id {
		return nil, fmt.Errorf("page %d: header says page %d (overwritten or zeroed)", id, got)
	}
	overflow := uint64(ne.Uint32(hdr[12:]))
	if id+overflow >= v.hwm {
		return nil, fmt.Errorf("page %d: %d overflow pages run past the end of the database", id, overflow)
	}
	buf := make([]byte, int64(overflow+1)*v.ps)
	if _, err := v.r.ReadAt(buf, int64(id)*v.ps); err != nil {
		return nil, fmt.Errorf("page %d: read: %w", id, err)
	}
	for i := id; i <= id+overflow; i++ {
		if v.seen[i] {
			return nil, fmt.Errorf("page %d: referenced twice (a cycle or a cross-linked page)", i)
		}
		v.seen[i] = true
	}
	return buf, nil
}

func (v *verifier) freelist(id uint64) ([]uint64, error) {
	p, err := v.page(id)
	if err != nil {
		return nil, fmt.Errorf("free list: %w", err)
	}
	if flags := ne.Uint16(p[8:]); flags != flagFreelist {
		return nil, fmt.Errorf("free list: page %d is not a free-list page (flags 0x%x)", id, flags)
	}
	n, off := uint64(ne.Uint16(p[10:])), uint64(pageHeaderSize)
	if n == 0xFFFF {
		n, off = ne.Uint64(p[pageHeaderSize:]), pageHeaderSize+8
	}
	if n > (uint64(len(p))-off)/8 {
		return nil, fmt.Errorf("free list: %d entries do not fit in page %d", n, id)
	}
	ids := make([]uint64, n)
	dup := make(map[uint64]bool, n)
	for i := range ids {
		ids[i] = ne.Uint64(p[off+uint64(i)*8:])
		if ids[i] < 2 || ids[i] >= v.hwm {
			return nil, fmt.Errorf("free list: page %d outside the database", ids[i])
		}
		if dup[ids[i]] {
			return nil, fmt.Errorf("free list: page %d freed twice", ids[i])
		}
		dup[ids[i]] = true
	}
	return ids, nil
}

// tree checks the b-tree rooted at page id and every bucket below it; its
// keys must lie in [lo, hi) (nil: unbounded), as its parent's keys say.
func (v *verifier) tree(id uint64, depth int, lo, hi []byte) error {
	if depth > maxTreeDepth {
		return fmt.Errorf("page %d: b-tree deeper than %d levels", id, maxTreeDepth)
	}
	p, err := v.page(id)
	if err != nil {
		return err
	}
	return v.node(id, p, depth, false, lo, hi)
}

// node checks one branch or leaf page p (a real page, or the inline page of
// a small bucket held in a value when inline is set) whose keys must lie in
// [lo, hi).
func (v *verifier) node(id uint64, p []byte, depth int, inline bool, lo, hi []byte) error {
	if len(p) < pageHeaderSize {
		return fmt.Errorf("page %d: inline bucket shorter than a page header", id)
	}
	flags, count := ne.Uint16(p[8:]), int(ne.Uint16(p[10:]))
	switch {
	case flags == flagLeaf:
	case flags == flagBranch && !inline:
		if count == 0 {
			return fmt.Errorf("page %d: empty branch page", id)
		}
	default:
		return fmt.Errorf("page %d: not a branch or leaf page (flags 0x%x)", id, flags)
	}
	if pageHeaderSize+count*elemSize > len(p) {
		return fmt.Errorf("page %d: %d elements do not fit in the page", id, count)
	}
	var prev []byte
	for i := range count {
		at := pageHeaderSize + i*elemSize
		e := p[at : at+elemSize]
		var pos, ksize, vsize, eflags uint64
		switch flags {
		case flagBranch:
			pos, ksize = uint64(ne.Uint32(e[0:])), uint64(ne.Uint32(e[4:]))
		case flagLeaf:
			eflags, pos, ksize, vsize = uint64(ne.Uint32(e[0:])), uint64(ne.Uint32(e[4:])), uint64(ne.Uint32(e[8:])), uint64(ne.Uint32(e[12:]))
		}
		start := uint64(at) + pos
		if ksize == 0 || start+ksize+vsize > uint64(len(p)) {
			return fmt.Errorf("page %d: element %d: key or value outside the page", id, i)
		}
		key := p[start : start+ksize]
		if prev != nil && bytes.Compare(prev, key) >= 0 ||
			lo != nil && bytes.Compare(key, lo) < 0 || hi != nil && bytes.Compare(key, hi) >= 0 {
			return fmt.Errorf("page %d: keys out of order at element %d", id, i)
		}
		prev = key
		switch {
		case flags == flagBranch:
			next := hi // the child holds keys up to the next element's
			if i+1 < count {
				at := pageHeaderSize + (i+1)*elemSize
				npos, nksize := uint64(ne.Uint32(p[at:])), uint64(ne.Uint32(p[at+4:]))
				if s := uint64(at) + npos; nksize > 0 && s+nksize <= uint64(len(p)) {
					next = p[s : s+nksize]
				}
			}
			if err := v.tree(ne.Uint64(e[8:]), depth+1, key, next); err != nil {
				return err
			}
		case eflags&bucketEntry != 0:
			val := p[start+ksize : start+ksize+vsize]
			if len(val) < 16 {
				return fmt.Errorf("page %d: bucket %q: header shorter than 16 bytes", id, key)
			}
			if root := ne.Uint64(val); root != 0 {
				if err := v.tree(root, depth+1, nil, nil); err != nil {
					return fmt.Errorf("bucket %q: %w", key, err)
				}
			} else if inline {
				return fmt.Errorf("page %d: inline bucket %q holds another inline bucket", id, key)
			} else if err := v.node(id, val[16:], depth+1, true, nil, nil); err != nil {
				return fmt.Errorf("bucket %q: %w", key, err)
			}
		case eflags != 0:
			return fmt.Errorf("page %d: element %d: unknown flags 0x%x", id, i, eflags)
		}
	}
	return nil
}
