#!/bin/sh
# /init of the dmsync test guest. Mounts the kernel file systems, loads the
# modules, runs every entry of /dmsync/plan with markers the host parses,
# dumps dmesg and powers off. Built into the initramfs by test/vm.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/dmsync/bin
export HOME=/root TMPDIR=/tmp DM_DISABLE_UDEV=1 GOTRACEBACK=all
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/lib /var/run /root /dev/mapper
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs -o size=75% tmpfs /tmp
mount -t configfs configfs /sys/kernel/config 2>/dev/null
ln -sf /proc/self/fd /dev/fd
ln -sf /proc/mounts /etc/mtab
echo /usr/sbin/modprobe > /proc/sys/kernel/modprobe
ip link set lo up
hostname dmsync-guest

echo "=== DMSYNC-GUEST BOOTED $(cut -d' ' -f1 /proc/uptime)"
if ! modprobe -a $(cat /dmsync/modules) 2>/tmp/modprobe.err; then
	echo "=== DMSYNC-GUEST MODULES FAILED: $(cat /tmp/modprobe.err | tr '\n' ' ')"
fi
# Disks show up asynchronously once virtio_blk is in.
n=$(cat /dmsync/disks)
i=0
while [ "$(ls /sys/block | grep -c '^vd')" -lt "$n" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
echo "=== DMSYNC-GUEST READY $(cut -d' ' -f1 /proc/uptime) disks=$(ls /sys/block | grep '^vd' | tr '\n' ' ')"

while IFS="$(printf '\t')" read -r name cmd; do
	[ -n "$name" ] || continue
	echo "=== DMSYNC-GUEST BEGIN $name"
	cd /tmp
	sh -c "$cmd" </dev/null 2>&1
	rc=$?
	cd /
	echo "=== DMSYNC-GUEST END $name rc=$rc"
done < /dmsync/plan

echo "=== DMSYNC-GUEST DMESG BEGIN"
dmesg
echo "=== DMSYNC-GUEST DMESG END"
echo "=== DMSYNC-GUEST DONE"
sync
poweroff -f
