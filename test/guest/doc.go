// Package guest holds real-kernel tests of the guest itself and of the
// kernel facts dmsync relies on: the modules load, linear and mirror
// devices work over the guest's virtio disks. They run inside the QEMU guest
// that test/vm boots, and are skipped elsewhere.
package guest
