# churn (live only, `vmcores/build --live churn`): the settled state, then a kernel that keeps changing the
# things lpdebug walks, for as long as the guest runs:
#   - fork: shells forking and exiting short-lived tasks at a high rate (the task list, the pid IDR);
#   - fgraph: function_graph switched on and off (every ret_stack, every dyn_ftrace record's flags);
#   - livepatch: livepatch-sample disabled (a transition), the module unloaded and loaded again (its
#     patch enabled: another transition), in a loop (klp_patches, klp_ops, the transition, the module
#     list and the module's dyn_ftrace records);
#   - kick: lpd_lp_victim and lpd_stub_sleep woken with SIGUSR1 and sleeping again (their frames, their
#     TOC save slots and the livepatch stack are rewritten under the reader).
# The ground truth is the settled state, taken before the churn starts. A host pauses the churn with
# `lpd-churn hold` on the console shell (each loop parks at a safe point, no transition in flight; it
# prints the kernel's own views between LPD-HOLD-BEGIN and LPD-HOLD-END), and resumes it with
# `lpd-churn go`; `lpd-churn status` prints the loops' counters.
setup_settled
collect_truth
send_truth

CH=/tmp/churn
mkdir -p $CH
SAMPLE=livepatch_sample

park() { # park LOOP: while the churn is held, say so and wait
	[ -e $CH/hold ] || return 0
	touch $CH/parked.$1
	while [ -e $CH/hold ]; do usleep 100000; done
	rm -f $CH/parked.$1
}

churn_fork() {
	while :; do
		park fork$1
		n=0
		while [ $n -lt 50 ]; do
			/bin/busybox true
			n=$((n + 1))
		done
		echo $(( $(cat $CH/forks.$1 2>/dev/null || echo 0) + 50 )) > $CH/forks.$1
	done
}

churn_fgraph() {
	while :; do
		echo function_graph > $TR/current_tracer
		usleep 700000
		park fgraph  # held with function_graph on: every hooked return has a ret_stack entry to check
		echo nop > $TR/current_tracer
		echo $(( $(cat $CH/fgraph 2>/dev/null || echo 0) + 1 )) > $CH/fgraph
		usleep 700000
	done
}

sample_gone() { [ ! -e /sys/kernel/livepatch/$SAMPLE ]; }
sample_settled() { [ "$(cat /sys/kernel/livepatch/$SAMPLE/transition 2>/dev/null)" = 0 ]; }

churn_livepatch() {
	while :; do
		park livepatch  # held with no transition in flight (sample_settled or sample_gone below)
		if [ -e /sys/kernel/livepatch/$SAMPLE ]; then
			while ! sample_settled; do usleep 50000; done
			echo 0 > /sys/kernel/livepatch/$SAMPLE/enabled
			while ! sample_gone; do usleep 50000; done
			while grep -q "^$SAMPLE " /proc/modules; do rmmod $SAMPLE 2>/dev/null || usleep 50000; done
		else
			insmod $MODDIR/livepatch-sample.ko
			while ! sample_settled; do usleep 50000; done
		fi
		echo $(( $(cat $CH/livepatch 2>/dev/null || echo 0) + 1 )) > $CH/livepatch
		usleep 300000
	done
}

churn_kick() {
	LP=$(pid_of lpd_lp_victim); SS=$(pid_of lpd_stub_sleep)
	while :; do
		park kick
		kill -USR1 $LP $SS
		usleep 300000
	done
}

LOOPS="fork1 fork2 fgraph livepatch kick"
churn_fork 1 </dev/null >/dev/null 2>&1 &
churn_fork 2 </dev/null >/dev/null 2>&1 &
churn_fgraph </dev/null >/dev/null 2>&1 &
churn_livepatch </dev/null >/dev/null 2>&1 &
churn_kick </dev/null >/dev/null 2>&1 &

# The console shell is a new shell: the control command is a script of its own.
cat > /bin/lpd-churn <<EOF
#!/bin/busybox sh
# lpd-churn hold | go | status
CH=$CH
TR=$TR
LOOPS="$LOOPS"
EOF
cat >> /bin/lpd-churn <<'EOF'
case "$1" in
hold)
	touch $CH/hold
	for l in $LOOPS; do
		n=600
		while [ ! -e $CH/parked.$l ] && [ $n -gt 0 ]; do usleep 100000; n=$((n - 1)); done
		[ -e $CH/parked.$l ] || { echo "LPD-HOLD-FAIL: $l did not park"; exit 1; }
	done
	echo LPD-HOLD-BEGIN
	echo "current_tracer $(cat $TR/current_tracer)"
	for p in /sys/kernel/livepatch/*; do
		[ -d "$p" ] || continue
		echo "patch ${p##*/} enabled=$(cat $p/enabled) transition=$(cat $p/transition)"
	done
	while read name size refs deps state addr; do echo "module $name $state"; done < /proc/modules
	echo "threads $(cut -d' ' -f4 /proc/loadavg)"
	for d in /proc/[0-9]*; do echo "task ${d#/proc/} $(cat $d/comm 2>/dev/null)"; done
	echo LPD-HOLD-END
	;;
go)
	rm -f $CH/hold
	echo LPD-GO
	;;
status)
	echo "LPD-CHURN forks=$(cat $CH/forks.1 2>/dev/null)+$(cat $CH/forks.2 2>/dev/null)" \
		"fgraph=$(cat $CH/fgraph 2>/dev/null) livepatch=$(cat $CH/livepatch 2>/dev/null)" \
		"hold=$([ -e $CH/hold ] && echo 1 || echo 0)"
	echo LPD-CHURN-STATUS-END
	;;
*)
	echo "usage: lpd-churn hold|go|status"; exit 2
	;;
esac
EOF
chmod 755 /bin/lpd-churn
say "churn running: $LOOPS"
echo LPD-READY
idle
