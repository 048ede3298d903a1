package blockhash

// GearSeed seeds the splitmix64 generator that fills the gear table. It is
// part of chunking format version 1.
const GearSeed uint64 = 0x646d73796e632d31 // "dmsync-1"

// gearTable is the table of the gear rolling hash: one random 64-bit value
// per byte value.
var gearTable = newGearTable(GearSeed)

func newGearTable(seed uint64) (t [256]uint64) {
	s := splitmix64(seed)
	for i := range t {
		t[i] = s.next()
	}
	return t
}

// splitmix64 is Vigna's SplitMix64 generator: tiny, fully specified and
// good enough to fill the gear table and to make deterministic test data.
type splitmix64 uint64

func (s *splitmix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
