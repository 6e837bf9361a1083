package processor

import "hash/maphash"

// devIndex finds a device by id: an open-addressing hash table (linear
// probing) of positions in Engine.devList, 4 bytes a slot at a load of at
// most 3/4 (5–11 bytes a device), where a map[string]*device took ~50 (a
// 24-byte slot, key and pointer, at Go's load factor and growth). The id is
// kept once, in the device. A slot holds the position + 1 in its low bits
// (below len(slots), which the load bound keeps it under) and high bits of
// the id's hash above them, so that a probe past another device's slot
// rarely has to read that device.
type devIndex struct {
	seed  maphash.Seed
	slots []uint32 // 0 = empty; len a power of two
	low   uint32   // len(slots) − 1: the mask of the position bits
	n     int
}

func (x *devIndex) hash(id string) uint64 { return maphash.String(x.seed, id) }

// tag is the part of a slot that comes from the hash h.
func (x *devIndex) tag(h uint64) uint32 { return uint32(h>>32) &^ x.low }

// get returns the device with id, or nil.
func (x *devIndex) get(list []*device, id string) *device {
	if x.n == 0 {
		return nil
	}
	h := x.hash(id)
	t := x.tag(h)
	for i := uint32(h) & x.low; ; i = (i + 1) & x.low {
		s := x.slots[i]
		if s == 0 {
			return nil
		}
		if s&^x.low == t {
			if d := list[s&x.low-1]; d.id == id {
				return d
			}
		}
	}
}

// put adds d (not present), at its position d.idx in list.
func (x *devIndex) put(list []*device, d *device) {
	if (x.n+1)*4 > len(x.slots)*3 {
		x.rebuild(list, max(16, 2*len(x.slots)))
		if list[d.idx] == d {
			return // rebuilt with d
		}
	}
	x.insert(d)
	x.n++
}

func (x *devIndex) insert(d *device) {
	h := x.hash(d.id)
	i := uint32(h) & x.low
	for x.slots[i] != 0 {
		i = (i + 1) & x.low
	}
	x.slots[i] = x.tag(h) | uint32(d.idx+1)
}

// rebuild makes a table of size slots holding every device of list.
func (x *devIndex) rebuild(list []*device, size int) {
	if x.seed == (maphash.Seed{}) {
		x.seed = maphash.MakeSeed()
	}
	x.slots = make([]uint32, size)
	x.low = uint32(size - 1)
	x.n = 0
	for _, d := range list {
		x.insert(d)
		x.n++
	}
}

// reset indexes exactly the devices of list (after FinishRestore).
func (x *devIndex) reset(list []*device) {
	size := 16
	for size*3 < len(list)*4 {
		size *= 2
	}
	x.rebuild(list, size)
}

// find returns the slot holding position idx of the device with id.
func (x *devIndex) find(id string, idx int32) uint32 {
	for i := uint32(x.hash(id)) & x.low; ; i = (i + 1) & x.low {
		if x.slots[i]&x.low == uint32(idx+1) {
			return i
		}
	}
}

// del removes d (present, at its position in list), shifting back the
// entries after it that probed past its slot.
func (x *devIndex) del(list []*device, d *device) {
	i := x.find(d.id, d.idx)
	for j := (i + 1) & x.low; x.slots[j] != 0; j = (j + 1) & x.low {
		k := uint32(x.hash(list[x.slots[j]&x.low-1].id)) & x.low
		// Move the entry at j to the hole at i unless its home lies
		// cyclically in (i, j].
		if (i <= j && (k <= i || k > j)) || (i > j && k <= i && k > j) {
			x.slots[i] = x.slots[j]
			i = j
		}
	}
	x.slots[i] = 0
	x.n--
}

// moved records that d, found at position from, is now at d.idx.
func (x *devIndex) moved(d *device, from int32) {
	i := x.find(d.id, from)
	x.slots[i] = x.slots[i]&^x.low | uint32(d.idx+1)
}
