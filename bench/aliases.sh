#!/bin/bash
# usage: bench/aliases.sh BINARY N RCPT: `mailroom serve` on a fresh data directory holding N aliases (each
# alias<i>@bench.test -> user@bench.test, other<i>@bench.test; plus team@ -> user@ when N > 0), then
# `mailroom bench` 10,000 x 1 KiB over 10 sessions to RCPT; prints msg/s, latency and the server's CPU per message.
BIN=$1; N=$2; RCPT=$3; D=$(mktemp -d /var/tmp/mrbench.XXXX); PORT=$((20000 + RANDOM % 20000))
mkdir -p $D
$BIN user add --data-dir $D user@bench.test >/dev/null
/usr/bin/python3 - "$D" "$N" <<'PY'
import sys
d, n = sys.argv[1], int(sys.argv[2])
with open(f"{d}/aliases.toml", "w") as f:
    for i in range(n):
        f.write(f'[[alias]]\naddress = "alias{i}@bench.test"\ntargets = ["user@bench.test", "other{i}@bench.test"]\n')
    if n:
        f.write('[[alias]]\naddress = "team@bench.test"\ntargets = ["user@bench.test"]\n')
PY
$BIN serve --data-dir $D --listen 127.0.0.1:$PORT --domain bench.test >/dev/null 2>$D.log & PID=$!
sleep 2
T0=$(awk '{print $14+$15}' /proc/$PID/stat)
echo "== aliases=$N rcpt=$RCPT sessions=10 messages=10000"
$BIN bench --server 127.0.0.1:$PORT --connections 10 --messages 10000 --size 1024 --from b@x.test --to $RCPT 2>&1 | tail -6
T1=$(awk '{print $14+$15}' /proc/$PID/stat)
echo "server CPU us/msg: $(( (T1-T0)*10000/10000 ))"
kill $PID; wait $PID
rm -rf $D $D.log
