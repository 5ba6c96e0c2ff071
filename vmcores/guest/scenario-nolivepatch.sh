# nolivepatch: Debian's own kernel (no CONFIG_LIVEPATCH), a few of its modules loaded, function_graph on.
for m in $(cat /lib/modules/load.list); do load $m; done
function_graph_on
finish
