package processor

import "hash/maphash"

// devIndex finds a device by id: an open-addressing hash table (linear
// probing) of positions in Engine.devList, 4 bytes a slot at a load of at
// most 3/4 (5–11 bytes a device), where a map[string]*device took ~50 (a
// 24-byte slot, key and pointer, at Go's load factor and growth). The id is
// kept once, in the device.
type devIndex struct {
	seed  maphash.Seed
	slots []int32 // devList position + 1; 0 = empty; len a power of two
	n     int
}

func (x *devIndex) home(id string) int {
	return int(maphash.String(x.seed, id)) & (len(x.slots) - 1)
}

// get returns the device with id, or nil.
func (x *devIndex) get(list []*device, id string) *device {
	if x.n == 0 {
		return nil
	}
	mask := len(x.slots) - 1
	for i := x.home(id); ; i = (i + 1) & mask {
		s := x.slots[i]
		if s == 0 {
			return nil
		}
		if d := list[s-1]; d.id == id {
			return d
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
	mask := len(x.slots) - 1
	i := x.home(d.id)
	for x.slots[i] != 0 {
		i = (i + 1) & mask
	}
	x.slots[i] = d.idx + 1
}

// rebuild makes a table of size slots holding every device of list.
func (x *devIndex) rebuild(list []*device, size int) {
	if x.seed == (maphash.Seed{}) {
		x.seed = maphash.MakeSeed()
	}
	x.slots = make([]int32, size)
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
func (x *devIndex) find(id string, idx int32) int {
	mask := len(x.slots) - 1
	for i := x.home(id); ; i = (i + 1) & mask {
		if x.slots[i] == idx+1 {
			return i
		}
	}
}

// del removes d (present, at its position in list), shifting back the
// entries after it that probed past its slot.
func (x *devIndex) del(list []*device, d *device) {
	mask := len(x.slots) - 1
	i := x.find(d.id, d.idx)
	for j := (i + 1) & mask; x.slots[j] != 0; j = (j + 1) & mask {
		k := x.home(list[x.slots[j]-1].id)
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
	x.slots[x.find(d.id, from)] = d.idx + 1
}
