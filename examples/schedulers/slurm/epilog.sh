#!/bin/sh
# PowerFlow job hint from Slurm: the job has ended.
# Install on the controller:  EpilogSlurmctld=/etc/powerflow/slurm/epilog.sh  (slurm.conf)
# Same /etc/powerflow/hint.env as prolog.sh. Exit 0 always: a hint is advisory.
set -u
ENV_FILE=${POWERFLOW_HINT_ENV:-/etc/powerflow/hint.env}
[ -r "$ENV_FILE" ] && . "$ENV_FILE"
export POWERFLOW_HOST POWERFLOW_TOKEN POWERFLOW_CACERT 2>/dev/null
powerflow hint end "slurm-${SLURM_JOB_ID:?}" 2>/dev/null || true  # not hinted: nothing to end
exit 0
