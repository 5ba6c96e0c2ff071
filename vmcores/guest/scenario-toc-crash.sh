# toc-crash: settled, then kthread lpd_crash returns through a corrupted TOC and oopses; panic_on_oops
# starts the kdump capture kernel (loaded with kexec -p), whose /init copies /proc/vmcore to /dev/vda.
setup_settled
load lpd_toc_crash
CR=$(pid_of lpd_crash)
wait_for 60 "lpd_crash waiting" stack_has $CR lpd_crash_victim
snapshot_tasks .nofgraph
echo 1 > /sys/module/lpd_toc_crash/parameters/inject || fail "inject failed"
fgraph_enable
kick_victims
echo 1 > /proc/sys/kernel/panic_on_oops
kexec -p /kdump/vmlinux --initrd=/kdump/initrd.gz \
	--append="console=hvc0 nokaslr maxcpus=1 noirqdistrib reset_devices lpd_kdump" || fail "kexec -p failed"
[ "$(cat /sys/kernel/kexec_crash_loaded)" = 1 ] || fail "no crash kernel loaded"
say "crash kernel loaded; lpd_crash=$CR"
collect_truth
send_truth
echo "LPD-VMCOREINFO $(cat /sys/kernel/vmcoreinfo)"
# vmcores/build --live: stay up, trigger by hand (/tmp/cmdline: the sample livepatches /proc/cmdline)
if grep -q lpd_live /tmp/cmdline; then
	say "live: crash it from the console shell: echo 1 > /sys/module/lpd_toc_crash/parameters/trigger"
	echo LPD-READY
	idle
fi
echo LPD-TRIGGER
echo 1 > /sys/module/lpd_toc_crash/parameters/trigger
sleep 10
fail "lpd_crash did not crash"
