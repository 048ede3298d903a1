package blockhash

import "unsafe"

// addrOf returns the memory address of b's first byte, for alignment only.
func addrOf(b []byte) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(b))) }
