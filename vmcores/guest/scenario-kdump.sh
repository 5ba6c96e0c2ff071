# /init of the kdump capture kernel: copy /proc/vmcore to the raw virtio disk, then power off.
[ -e /proc/vmcore ] || fail "no /proc/vmcore in the capture kernel"
say "capture kernel: /proc/vmcore is $(stat -c %s /proc/vmcore) bytes"
dd if=/proc/vmcore of=/dev/vda bs=1M 2>/tmp/dd.err || { cat /tmp/dd.err; fail "dd /proc/vmcore failed"; }
sync
echo "LPD-KDUMP-DONE $(stat -c %s /proc/vmcore)"
echo o > /proc/sysrq-trigger
idle
