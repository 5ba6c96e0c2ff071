# stuck: settled, then a patch whose transition cannot finish (lpd_stuck sleeps forever in the old function)
setup_settled
load lpd_stuck
ST=$(pid_of lpd_stuck)
wait_for 60 "lpd_stuck asleep in lpd_stuck_func" stack_has $ST lpd_stuck_func
load lpd_stuck_patch
wait_for 30 "lpd_stuck_patch in transition" in_transition lpd_stuck_patch
sleep 3
in_transition lpd_stuck_patch || fail "lpd_stuck_patch transition finished"
say "lpd_stuck=$ST, lpd_stuck_patch stuck in transition"
function_graph_on
finish
