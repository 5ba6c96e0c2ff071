# Shell library of the testbed guests (busybox sh). /init is this file followed by one scenario script.
# Console protocol (hvc0): "LPD: ..." progress, "LPD-FAIL: ..." on failure, "LPD-READY" when the guest
# has sent its ground truth and idles (the host then stops it and captures memory).
# The ground truth goes out on /dev/hvc1 as base64(tar.gz) between LPD-TRUTH-BEGIN and LPD-TRUTH-END.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /truth
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
TR=/sys/kernel/tracing
T=/truth
MODDIR=/lib/modules

say() { echo "LPD: $*"; }
idle() {
	if grep -q lpd_live /tmp/cmdline 2>/dev/null; then  # vmcores/build --live: a shell on the console socket
		while :; do sh -i </dev/hvc0 >/dev/hvc0 2>&1; sleep 1; done
	fi
	while :; do sleep 3600; done
}
fail() { echo "LPD-FAIL: $*"; dmesg | tail -30; idle; }

load() { # load MODULE [ARGS...] from /lib/modules
	m=$1; shift
	insmod $MODDIR/$m.ko "$@" || fail "insmod $m failed"
	say "loaded $m"
}

pid_of() { # pids of tasks whose comm is $1
	for d in /proc/[0-9]*; do
		[ "$(cat $d/comm 2>/dev/null)" = "$1" ] && echo ${d#/proc/}
	done
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: poll until COMMAND succeeds
	n=$(( $1 * 10 )); what=$2; shift 2
	while [ $n -gt 0 ]; do
		"$@" && return 0
		usleep 100000
		n=$((n - 1))
	done
	fail "timeout waiting for $what"
}

transition_done() { [ "$(cat /sys/kernel/livepatch/$1/transition 2>/dev/null)" = 0 ]; }
in_transition() { [ "$(cat /sys/kernel/livepatch/$1/transition 2>/dev/null)" = 1 ]; }
stack_has() { grep -q "$2" /proc/$1/stack 2>/dev/null; }
stack_hooked() { grep -qE 'mcount|return_to_handler' /proc/$1/stack 2>/dev/null; }

wait_patched() { wait_for 120 "livepatch $1 transition" transition_done $1; say "patch $1 settled"; }

snapshot_tasks() { # snapshot_tasks SUFFIX: tasks/PID/{comm,stack$SUFFIX,stat$SUFFIX}
	for d in /proc/[0-9]*; do
		p=${d#/proc/}
		mkdir -p $T/tasks/$p
		cat $d/comm > $T/tasks/$p/comm 2>/dev/null
		cat $d/stack > $T/tasks/$p/stack$1 2>/dev/null
		cat $d/stat > $T/tasks/$p/stat$1 2>/dev/null
		[ -s $T/tasks/$p/comm ] || rm -rf $T/tasks/$p
	done
}

copy_tree() { # copy_tree SRC DST: copy a sysfs tree, readable regular files only
	(cd $1 && find . -type d) | while read d; do mkdir -p "$2/$d"; done
	(cd $1 && find . -type f) | while read f; do
		cat "$1/$f" > "$2/$f" 2>/dev/null || rm -f "$2/$f"
	done
}

fgraph_enable() {
	echo function_graph > $TR/current_tracer || fail "cannot switch on function_graph"
	say "function_graph on"
}

sleeping() { [ "$(cut -d' ' -f3 /proc/$1/stat)" = S ]; }

kick() { # kick COMM: SIGUSR1 to the lpd kthread COMM, which returns from its sleep and sleeps again
	for p in $(pid_of $1); do
		kill -USR1 $p || fail "kill -USR1 $1"
		# hooked returns print as mcount+0x10 (6.1, 6.12) or return_to_handler+0x0 (5.10, where it is a
		# _GLOBAL symbol of its own in trace/ftrace_64.S) in /proc/PID/stack
		wait_for 60 "$1 asleep again under function_graph" stack_hooked $p
		wait_for 60 "$1 asleep" sleeping $p
		usleep 500000
		say "$1 ($p) re-entered its sleep under function_graph"
	done
}

kick_victims() { # re-enter the sleeps of lpd_victim's kthreads (they are then hooked by function_graph)
	kick lpd_lp_victim
	kick lpd_stub_sleep
}

function_graph_on() { # stack.nofgraph snapshot, function_graph on, victims re-enter their sleeps
	snapshot_tasks .nofgraph
	fgraph_enable
	kick_victims
}

collect_truth() {
	say "collecting ground truth"
	mkdir -p $T
	if [ -d /sys/kernel/livepatch ]; then
		mkdir -p $T/sys_kernel_livepatch
		copy_tree /sys/kernel/livepatch $T/sys_kernel_livepatch
	fi
	cat $TR/enabled_functions > $T/enabled_functions
	[ -e $TR/touched_functions ] && cat $TR/touched_functions > $T/touched_functions
	cat $TR/current_tracer > $T/current_tracer
	cat /proc/modules > $T/modules
	cat /proc/kallsyms > $T/kallsyms  # the kernel's own names, the oracle for symbol naming
	cat /proc/loadavg > $T/loadavg  # running/total threads: the task-count oracle
	cat /proc/stat > $T/proc_stat  # "processes": forks since boot
	for s in /sys/module/*/sections; do
		m=${s%/sections}; m=${m##*/}
		mkdir -p $T/sections/$m
		for f in $(ls -a $s); do
			[ -f $s/$f ] && cat $s/$f > $T/sections/$m/$f
		done
	done
	cat /sys/kernel/vmcoreinfo > $T/sys_kernel_vmcoreinfo
	uname -r > $T/uname_r
	cp /tmp/cmdline $T/cmdline
	cat /proc/cmdline > $T/proc_cmdline
	dmesg > $T/dmesg
	grep -h 'LPD_INJECT {' $T/dmesg | sed 's/.*LPD_INJECT {/{/' > /tmp/inj
	if [ -s /tmp/inj ]; then
		{ echo "["; sed '$!s/$/,/' /tmp/inj; echo "]"; } > $T/injected.json
	fi
	snapshot_tasks ""
}

send_truth() {
	stty -F /dev/hvc1 raw -echo 2>/dev/null
	echo LPD-TRUTH-BEGIN > /dev/hvc1
	tar c -C $T . | gzip | base64 > /dev/hvc1
	echo LPD-TRUTH-END > /dev/hvc1
	say "truth sent"
}

finish() { # ground truth, then READY and idle
	collect_truth
	send_truth
	echo "LPD-VMCOREINFO $(cat /sys/kernel/vmcoreinfo)"
	echo LPD-READY
	idle
}

cat /proc/cmdline > /tmp/cmdline
say "guest up: $(uname -r) $(cat /proc/cmdline)"
