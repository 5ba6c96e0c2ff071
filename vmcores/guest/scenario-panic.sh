# panic: settled, then `echo c > /proc/sysrq-trigger`, which calls panic() (sysrq_handle_crash, 5.10): the
# crash notes are then saved by ppc_save_regs() (no exception frame), and kdump captures them.
setup_settled
function_graph_on
kexec -p /kdump/vmlinux --initrd=/kdump/initrd.gz \
	--append="console=hvc0 nokaslr maxcpus=1 noirqdistrib reset_devices lpd_kdump" || fail "kexec -p failed"
[ "$(cat /sys/kernel/kexec_crash_loaded)" = 1 ] || fail "no crash kernel loaded"
say "crash kernel loaded"
collect_truth
send_truth
echo "LPD-VMCOREINFO $(cat /sys/kernel/vmcoreinfo)"
if grep -q lpd_live /tmp/cmdline; then
	say "live: crash it from the console shell: echo c > /proc/sysrq-trigger"
	echo LPD-READY
	idle
fi
echo LPD-TRIGGER
echo c > /proc/sysrq-trigger
sleep 10
fail "sysrq c did not crash"
