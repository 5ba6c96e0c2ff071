# onhost: lpdebug run inside the guest on its own kernel (/proc/kcore), as a POWER user would: Debian's
# python3.11 with the cross-built drgn, debug info where a distro puts it (no -s). The ground truth is
# collected first, as in every scenario; lpdebug's outputs and the timings travel with it in onhost/.
up() { cut -d' ' -f1 /proc/uptime; }
O=$T/onhost
mkdir -p $O /root /dev/pts
echo "boot $(up)" > /tmp/timings
mount -t devpts devpts /dev/pts || fail "cannot mount devpts"
export HOME=/root
setup_settled
function_graph_on
collect_truth
mv /tmp/timings $O/timings
say "running lpdebug in the guest"
t0=$(up); python3.11 -c pass || fail "python3.11 does not start"; echo "python_start $t0 $(up)" >> $O/timings
# drgn's import and the debug-info load, timed inside one python
python3.11 /usr/local/bin/lpd-onhost-timing > $O/drgn_timing.json 2> $O/drgn_timing.err ||
	fail "drgn cannot load the running kernel's debug info: $(tail -3 $O/drgn_timing.err)"
# The task list lpdebug reads holds lpdebug itself: the pids just before and after it ran are the facts
# the host compares it with. `echo` with a glob forks nothing.
echo /proc/[0-9]* > $O/pids.before
t0=$(up)
lpdebug triage -k --json > $O/triage.json 2> $O/triage.err &
LPID=$!
echo $LPID > $O/lpdebug.pid
wait $LPID
echo $? > $O/triage.rc
echo "triage $t0 $(up)" >> $O/timings
echo /proc/[0-9]* > $O/pids.after
say "triage exit $(cat $O/triage.rc)"
BT=$(pid_of lpd_lp_victim)
echo $BT > $O/bt.pid
t0=$(up)
lpdebug bt -k --json $BT > $O/bt.json 2> $O/bt.err
echo $? > $O/bt.rc
echo "bt $t0 $(up)" >> $O/timings
# drgn's REPL (it wants a terminal): %lptriage typed into `drgn -k` on a pseudo-terminal
t0=$(up)
python3.11 /usr/local/bin/lpd-repl /usr/bin/drgn -k -- '%lptriage' > $O/repl.txt 2> $O/repl.err
echo $? > $O/repl.rc
echo "repl $t0 $(up)" >> $O/timings
say "timings: $(tr '\n' ' ' < $O/timings)"
send_truth
echo "LPD-VMCOREINFO $(cat /sys/kernel/vmcoreinfo)"
echo LPD-READY
idle
