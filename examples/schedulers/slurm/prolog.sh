#!/bin/sh
# PowerFlow job hint from Slurm: the job's devices start drawing power.
# Install on the controller:  PrologSlurmctld=/etc/powerflow/slurm/prolog.sh  (slurm.conf)
# It reads:
#   /etc/powerflow/hint.env      POWERFLOW_HOST, POWERFLOW_TOKEN (an operator token),
#                                POWERFLOW_CACERT; optional POWERFLOW_WATTS (W per device
#                                while a job runs; unset: each device's p_max_w, the most
#                                it may draw) and POWERFLOW_DEVICE_MAP
#   the device map               one line per Slurm node: NODE DEVICE[,DEVICE...]
#                                (default /etc/powerflow/devices.map)
# A hint is advisory: whatever happens here, the job starts (exit 0 always; the reason goes
# to the slurmctld log). The job's time limit is its duration (hints expire at the end).
set -u
ENV_FILE=${POWERFLOW_HINT_ENV:-/etc/powerflow/hint.env}
[ -r "$ENV_FILE" ] && . "$ENV_FILE"
MAP=${POWERFLOW_DEVICE_MAP:-/etc/powerflow/devices.map}
WATTS=${POWERFLOW_WATTS:-}
export POWERFLOW_HOST POWERFLOW_TOKEN POWERFLOW_CACERT 2>/dev/null

job=${SLURM_JOB_ID:?}
devices=""
for node in $(scontrol show hostnames "${SLURM_JOB_NODELIST:?}"); do
    d=$(awk -v n="$node" '$1 == n { print $2 }' "$MAP")
    [ -n "$d" ] && devices="${devices:+$devices,}$d"
done
[ -z "$devices" ] && exit 0  # none of the job's nodes is on a PowerFlow rack

# TimeLimit=D-HH:MM:SS, HH:MM:SS, MM:SS or UNLIMITED -> seconds (unlimited: a day, renewed
# by nothing: the epilog ends the hint)
limit=$(scontrol show job "$job" -o | tr ' ' '\n' | sed -n 's/^TimeLimit=//p')
secs=$(echo "$limit" | awk -F'[-:]' '
    /UNLIMITED|^$/ { print 86400; exit }
    { n = NF; s = $n + 60 * $(n - 1); if (n >= 3) s += 3600 * $(n - 2);
      if (n >= 4) s += 86400 * $(n - 3); print s }')

powerflow hint start "slurm-$job" --devices "$devices" ${WATTS:+--watts "$WATTS"} \
    --for "$secs" || echo "powerflow prolog: job $job: hint not taken" >&2
exit 0
