#!/bin/bash
# Launch a BitCPM job on one or more nodes with MindSpore's msrun (MindFormers' convention).
#
# Usage (same argument forms as MindFormers' scripts/msrun_launcher.sh):
#   bash run/msrun_launcher.sh "EXECUTE_ORDER"
#        8 workers on this node, defaults below
#   bash run/msrun_launcher.sh "EXECUTE_ORDER" WORKER_NUM
#        WORKER_NUM workers on this node
#   bash run/msrun_launcher.sh "EXECUTE_ORDER" WORKER_NUM MASTER_PORT LOG_DIR JOIN CLUSTER_TIME_OUT
#        single node, everything explicit
#   bash run/msrun_launcher.sh "EXECUTE_ORDER" WORKER_NUM LOCAL_WORKER MASTER_ADDR MASTER_PORT NODE_RANK \
#        LOG_DIR JOIN CLUSTER_TIME_OUT
#        multi-node: run once on every node with the same WORKER_NUM/MASTER_ADDR/MASTER_PORT and that
#        node's NODE_RANK (0 on the node whose address is MASTER_ADDR)
#
# EXECUTE_ORDER is the script and its arguments, e.g.
#   "run/run_bitcpm.py --config yaml_configs/pretrain_bitcpm_8b_910b.yaml --use_parallel true"
# Defaults: WORKER_NUM 8, LOCAL_WORKER 8, MASTER_ADDR 127.0.0.1, MASTER_PORT 8118, NODE_RANK 0,
#           LOG_DIR output/msrun_log, JOIN False, CLUSTER_TIME_OUT 7200.
#
# Logs: LOG_DIR/worker_<rank>.log per rank (msrun), LOG_DIR/scheduler.log (node 0 only),
#       LOG_DIR/msrun_node<NODE_RANK>.log (msrun's own output).
#
# JOIN=False: msrun returns once the workers are spawned; they keep running in the background
#   (MindFormers' default; watch LOG_DIR/worker_*.log).
# JOIN=True: this script waits for the job and returns its status. A watchdog fails the job fast:
#   as soon as msrun reports a worker that exited non-zero, it prints which rank died and the last
#   lines of its log, stops the remaining processes of this launch (msrun, scheduler, workers) and
#   exits 1. Without it, msrun kills the other workers but then waits for the scheduler, which
#   (if the rank died before the cluster was built) waits CLUSTER_TIME_OUT seconds: 2 hours by default.
#
# Preemption (JOIN=True): on SIGTERM or SIGINT (Ctrl-C) the launcher forwards SIGTERM to every
#   worker; each finishes its current step, saves a checkpoint and stops (all ranks after the same
#   step), and the launcher exits 75 once every rank has done so; continue with --resume_training
#   true. msrun itself runs in its own session, so a Ctrl-C does not reach it (msrun answers SIGINT
#   by SIGKILLing the workers). A second signal stops the job at once. With JOIN=False, send
#   SIGTERM to the worker processes yourself.
#
# Environment: TAIL_LINES (default 40) lines of the dead rank's log to print;
#              WATCHDOG_INTERVAL (default 1) seconds between checks.

set -u

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
}

if [ $# != 1 ] && [ $# != 2 ] && [ $# != 6 ] && [ $# != 9 ]; then
  echo "error: expected 1, 2, 6 or 9 arguments, got $#" >&2
  usage >&2
  exit 2
fi
case "${1:-}" in -h|--help) usage; exit 0 ;; esac

EXECUTE_ORDER="$1"
WORKER_NUM=8; LOCAL_WORKER=8; MASTER_ADDR="127.0.0.1"; MASTER_PORT=8118; NODE_RANK=0
LOG_DIR="output/msrun_log"; JOIN="False"; CLUSTER_TIME_OUT=7200
if [ $# == 2 ]; then
  WORKER_NUM=$2; LOCAL_WORKER=$2
elif [ $# == 6 ]; then
  WORKER_NUM=$2; LOCAL_WORKER=$2; MASTER_PORT=$3; LOG_DIR=$4; JOIN=$5; CLUSTER_TIME_OUT=$6
elif [ $# == 9 ]; then
  WORKER_NUM=$2; LOCAL_WORKER=$3; MASTER_ADDR=$4; MASTER_PORT=$5; NODE_RANK=$6
  LOG_DIR=$7; JOIN=$8; CLUSTER_TIME_OUT=$9
fi

is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }
for v in WORKER_NUM LOCAL_WORKER MASTER_PORT NODE_RANK; do
  if ! is_int "${!v}"; then echo "error: $v must be a non-negative integer, got '${!v}'" >&2; exit 2; fi
done
if ! [[ "$CLUSTER_TIME_OUT" =~ ^-?[0-9]+$ ]]; then
  echo "error: CLUSTER_TIME_OUT must be an integer, got '$CLUSTER_TIME_OUT'" >&2; exit 2
fi
if [ "$WORKER_NUM" -lt 1 ] || [ "$LOCAL_WORKER" -lt 1 ] || [ "$LOCAL_WORKER" -gt "$WORKER_NUM" ]; then
  echo "error: need 1 <= LOCAL_WORKER ($LOCAL_WORKER) <= WORKER_NUM ($WORKER_NUM)" >&2; exit 2
fi
case "$JOIN" in
  True|true|1) JOIN=True ;;
  False|false|0) JOIN=False ;;
  *) echo "error: JOIN must be True or False, got '$JOIN'" >&2; exit 2 ;;
esac
SCRIPT="${EXECUTE_ORDER%% *}"
if [ ! -f "$SCRIPT" ]; then
  echo "error: script '$SCRIPT' (first word of EXECUTE_ORDER) not found from $(pwd)" >&2; exit 2
fi
if ! command -v msrun >/dev/null 2>&1; then
  echo "error: msrun not found on PATH (it comes with the mindspore wheel)" >&2; exit 2
fi

mkdir -p "$LOG_DIR"
MSRUN_LOG="$LOG_DIR/msrun_node${NODE_RANK}.log"
TAIL_LINES=${TAIL_LINES:-40}
WATCHDOG_INTERVAL=${WATCHDOG_INTERVAL:-1}

echo "msrun_launcher: $WORKER_NUM workers ($LOCAL_WORKER on this node, node_rank $NODE_RANK), " \
     "master $MASTER_ADDR:$MASTER_PORT, logs in $LOG_DIR, join $JOIN, cluster_time_out $CLUSTER_TIME_OUT"
echo "msrun_launcher: command: $EXECUTE_ORDER"

# shellcheck disable=SC2086  # EXECUTE_ORDER is split into the script and its arguments on purpose
MSRUN_CMD=(msrun --worker_num="$WORKER_NUM" --local_worker_num="$LOCAL_WORKER" --master_addr="$MASTER_ADDR"
           --master_port="$MASTER_PORT" --node_rank="$NODE_RANK" --log_dir="$LOG_DIR" --join="$JOIN"
           --cluster_time_out="$CLUSTER_TIME_OUT" $EXECUTE_ORDER)

if [ "$JOIN" == "False" ]; then
  "${MSRUN_CMD[@]}" 2>&1 | tee "$MSRUN_LOG"
  rc=${PIPESTATUS[0]}
  echo "msrun_launcher: workers run in the background; follow them with: tail -f $LOG_DIR/worker_*.log"
  exit "$rc"
fi

# ---------------------------------------------------------------- JOIN=True: watch the job
descendants() {   # all descendant pids of $1 (children first found, depth-first)
  local c
  for c in $(pgrep -P "$1" 2>/dev/null); do
    echo "$c"
    descendants "$c"
  done
}

stop_tree() {     # stop msrun and every process it started, by pid
  local pids
  pids="$(descendants "$MSRUN_PID") $MSRUN_PID"
  kill -TERM $pids 2>/dev/null
  for _ in 1 2 3 4 5; do
    sleep 1
    local alive=""
    for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
    [ -z "$alive" ] && return
  done
  kill -KILL $pids 2>/dev/null
}

declare -A PID_RANK   # worker pid -> rank, read from /proc/PID/environ while the worker is alive
scan_workers() {
  local c r env_of parent
  for c in $(descendants "$MSRUN_PID"); do     # msrun's children (or setsid's grandchildren)
    [ -n "${PID_RANK[$c]:-}" ] && continue
    parent=$(ps -o ppid= -p "$c" 2>/dev/null | tr -d ' ')
    [ -n "$parent" ] && [ -n "${PID_RANK[$parent]:-}" ] && continue    # a process a worker started
    env_of=$( { tr '\0' '\n' < "/proc/$c/environ"; } 2>/dev/null )
    if grep -qx "MS_ROLE=MS_WORKER" <<< "$env_of"; then
      r=$(sed -n 's/^RANK_ID=//p' <<< "$env_of")
      [ -n "$r" ] && PID_RANK[$c]=$r
    fi
  done
}

rank_of_pid() {   # which rank pid $1 was: recorded map, else its pid in a log, else the one log with a Traceback
  local f hits
  if [ -n "${PID_RANK[$1]:-}" ]; then echo "${PID_RANK[$1]}"; return; fi
  for f in "$LOG_DIR"/worker_*.log; do
    [ -f "$f" ] || continue
    if grep -q "($1[,:]" "$f" 2>/dev/null; then basename "$f" .log | sed 's/^worker_//'; return; fi
  done
  hits=$(grep -l "Traceback" "$LOG_DIR"/worker_*.log 2>/dev/null)
  if [ "$(echo "$hits" | grep -c .)" == 1 ]; then basename "$hits" .log | sed 's/^worker_//'; return; fi
  echo "?"
}

report_dead() {   # $1 pid, $2 exit code
  local rank log
  rank=$(rank_of_pid "$1")
  log="$LOG_DIR/worker_${rank}.log"
  echo "" >&2
  echo "msrun_launcher: ERROR: worker rank $rank (pid $1) exited with code $2; stopping the job." >&2
  if [ -f "$log" ]; then
    echo "msrun_launcher: last $TAIL_LINES lines of $log:" >&2
    grep -v '^\[INFO\]\|^\[WARNING\]' "$log" | tail -n "$TAIL_LINES" | sed 's/^/    /' >&2
  else
    echo "msrun_launcher: (its log was not found; see $LOG_DIR)" >&2
  fi
}

PREEMPTED=0
on_signal() {     # $1: the signal's name
  if [ "$PREEMPTED" == 1 ]; then
    echo "msrun_launcher: second $1, stopping the job now" >&2
    stop_tree
    exit 130
  fi
  PREEMPTED=1
  scan_workers
  echo "msrun_launcher: $1: forwarding SIGTERM to the workers (${!PID_RANK[*]}); they save a checkpoint" \
       "after the current step and stop (send $1 again to stop at once)" >&2
  for p in "${!PID_RANK[@]}"; do kill -TERM "$p" 2>/dev/null; done
}
trap 'on_signal SIGINT' INT
trap 'on_signal SIGTERM' TERM

preempted_ranks() {   # how many rank logs report a clean stop after a signal
  grep -l "Training stopped by" "$LOG_DIR"/worker_*.log 2>/dev/null | wc -l
}

finish_preempted() {
  local n
  wait "$MSRUN_PID" 2>/dev/null
  sleep 0.2
  n=$(preempted_ranks)
  if [ "$n" -ge "$LOCAL_WORKER" ]; then
    echo "msrun_launcher: preempted: all $n ranks saved a checkpoint; continue with --resume_training true" >&2
    exit 75
  fi
  echo "msrun_launcher: preempted: only $n of $LOCAL_WORKER ranks saved a checkpoint (stopped before" \
       "training began?); see $LOG_DIR/worker_*.log" >&2
  exit 1
}

setsid --wait "${MSRUN_CMD[@]}" > "$MSRUN_LOG" 2>&1 &
MSRUN_PID=$!
tail -n +1 -f --pid="$MSRUN_PID" "$MSRUN_LOG" 2>/dev/null | grep --line-buffered -v '^\[INFO\]' &

while kill -0 "$MSRUN_PID" 2>/dev/null; do
  scan_workers
  [ "$PREEMPTED" == 1 ] && { sleep 0.2; continue; }     # workers are saving; they exit 75
  line=$(grep -m1 -E "Worker process [0-9]+ exit with exception" "$MSRUN_LOG" 2>/dev/null)
  if [ -n "$line" ]; then
    pid=$(sed -E 's/.*Worker process ([0-9]+) exit.*/\1/' <<< "$line")
    code=$(sed -nE 's/.*Error code: (-?[0-9]+).*/\1/p' <<< "$line")
    report_dead "$pid" "${code:-?}"
    stop_tree
    wait "$MSRUN_PID" 2>/dev/null
    echo "msrun_launcher: job failed (rank logs: $LOG_DIR/worker_*.log, msrun: $MSRUN_LOG)" >&2
    exit 1
  fi
  # sleep in the background and `wait` for it: bash runs a trap only once the foreground command
  # ends, and `wait` (unlike `sleep`) returns as soon as a trapped signal arrives, so SIGTERM is
  # forwarded to the workers at once instead of up to WATCHDOG_INTERVAL later
  if [ "$SECONDS" -lt 10 ]; then sleep 0.2 & else sleep "$WATCHDOG_INTERVAL" & fi
  wait $! 2>/dev/null
done
[ "$PREEMPTED" == 1 ] && finish_preempted
wait "$MSRUN_PID"
rc=$?
[ "$PREEMPTED" == 1 ] && finish_preempted
sleep 0.2   # let the console tail flush
if [ "$rc" -ne 0 ]; then
  # msrun failed without naming a worker (e.g. the scheduler or a rank on another node timed out)
  echo "msrun_launcher: ERROR: msrun exited with code $rc; see $MSRUN_LOG and $LOG_DIR/worker_*.log" >&2
  grep -h -E "timed out|Error|error" "$LOG_DIR/scheduler.log" 2>/dev/null | grep -v '^\[INFO\]' | tail -n 5 >&2
  exit "$rc"
fi
echo "msrun_launcher: all workers finished (logs: $LOG_DIR/worker_*.log)"
exit 0
