# scale-tasks: thousands of tasks, captured at three sizes in one boot (vmcores/build publishes
# scale-tasks-1000, -2500 and -5000). The tasks: sleeping busybox processes (`sleep`, and `sh -c` waiting for
# its `sleep`) and lpd_scale's kthreads, half of them asleep inside lpd_scale_patch's replacement (a
# livepatch-stack entry each), half asleep in msleep through a module stub; livepatch-sample on vmlinux.
# At each size: function_graph off and every lpd_scale kthread re-enters its sleep unhooked; new tasks until
# there are N; /proc/PID/stack of a sample (the first 100 pids and about SCALE_SAMPLE others) as
# stack.nofgraph; function_graph on and every second kthread re-enters its sleep hooked (fgraph entries; the
# others stay as they were, so that the same-point oracle can name their livepatch-hidden callers); the ground
# truth (the sample's stack again, comm and stat of every task); "LPD-STAGE-READY-N"; then the guest waits
# (in a child, so that the shell sleeps where it slept during the truth: in wait4) for the host's "go" on
# the console while the host captures it.
SCALE_STAGES="1000 2500 5000"
SCALE_SAMPLE=250
SCALE_KTHREADS=0
P=/sys/module/lpd_scale/parameters

threads() { read -r a b c t e < /proc/loadavg; echo ${t#*/}; }
have_tasks() { [ $(threads) -gt $1 ]; }  # not counting the $(...) subshell
calls_reached() { [ $(cat $P/calls) -ge $1 ]; }

scale_kick() { # scale_kick STEP: every STEP-th lpd_scale kthread returns from its sleep and enters it again
	c=$(cat $P/calls)
	echo $1 > $P/kick || fail "lpd_scale kick"
	wait_for 600 "lpd_scale kthreads asleep again" calls_reached $((c + (SCALE_KTHREADS + $1 - 1) / $1))
	sleep 2
}

spawn_to() { # spawn_to N: new tasks until there are N, 3/5 kthreads, 2/5 busybox processes
	need=$(( $1 - $(threads) ))
	k=$(( need * 3 / 5 )); kl=$(( k / 2 ))
	echo $kl > $P/spawn_lp || fail "spawn_lp $kl"
	echo $((k - kl)) > $P/spawn_sleep || fail "spawn_sleep $((k - kl))"
	SCALE_KTHREADS=$((SCALE_KTHREADS + k))
	u=$(( need - k )); w=$(( u / 10 ))
	i=0
	while [ $i -lt $w ]; do sh -c "sleep 1000000; exit 0" </dev/null >/dev/null 2>&1 & i=$((i + 1)); done
	i=$((2 * w))
	while [ $i -lt $u ]; do sleep 1000000 </dev/null >/dev/null 2>&1 & i=$((i + 1)); done
	sleep 2
	# top up (a shell may run its `sleep` itself, a busybox NOFORK applet)
	while ! have_tasks $1; do sleep 1000000 </dev/null >/dev/null 2>&1 & usleep 20000; done
	sleep 3
}

sample_pids() { # S: the first 100 pids and every STEP-th of the others
	step=$(( $(threads) / SCALE_SAMPLE )); [ $step -ge 1 ] || step=1
	n=0; S=""
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		if [ $p -le 100 ]; then S="$S $p"; else n=$((n + 1)); [ $((n % step)) -eq 0 ] && S="$S $p"; fi
	done
}

# The guest only greps: one file per kind of /proc file, lines "/proc/PID/FILE:text", in truth/tasks.lines/;
# vmcores/build splits them into truth/tasks/PID/FILE on the host (a shell loop takes minutes per thousand).
stacks_of() { # stacks_of SUFFIX PID...: /proc/PID/stack of these tasks, as tasks/PID/stack$SUFFIX
	suf=$1; shift
	mkdir -p $T/tasks.lines
	grep -H '' $(for p in "$@"; do echo /proc/$p/stack; done) > $T/tasks.lines/stack$suf 2>/dev/null
}

# lib.sh's takes three `cat`s per task, too slow for thousands: comm and stat of every task; for the sample,
# the context switch counts of /proc/PID/status (tasks/PID/ctxt: a task whose count in the dump is higher
# ran after the capture), then the stack.
snapshot_tasks() {
	mkdir -p $T/tasks.lines
	grep -H '' /proc/[0-9]*/comm > $T/tasks.lines/comm$1 2>/dev/null
	grep -H '' /proc/[0-9]*/stat > $T/tasks.lines/stat$1 2>/dev/null
	grep -H ctxt_switches $(for p in $S; do echo /proc/$p/status; done) > $T/tasks.lines/ctxt$1 2>/dev/null
	stacks_of "$1" $S
}

load lpd_scale
load livepatch-sample
wait_patched livepatch_sample
load lpd_scale_patch
wait_patched lpd_scale_patch
echo 100000 > /proc/sys/kernel/threads-max || fail "threads-max"
for N in $SCALE_STAGES; do
	say "stage $N: $(threads) tasks now"
	rm -rf $T; mkdir -p $T
	echo nop > $TR/current_tracer || fail "cannot switch off the tracer"
	[ $SCALE_KTHREADS -gt 0 ] && scale_kick 1
	spawn_to $N
	sample_pids
	stacks_of .nofgraph $S
	fgraph_enable
	scale_kick 2
	say "stage $N: $(threads) tasks, $SCALE_KTHREADS lpd_scale kthreads, $(grep MemFree /proc/meminfo)"
	collect_truth
	send_truth
	echo "LPD-STAGE-READY-$N"
	(read -r go < /dev/hvc0)
done
idle
