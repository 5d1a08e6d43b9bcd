#!/usr/bin/env bash
# Container smoke test on a real Docker engine: validate the compose files, build the serving
# image (and the trainer's, which must answer --help), check the serving image has no train
# extra, `up`, wait for the healthcheck, classify examples/cat.png, check a bad upload gets a
# JSON 4xx, then `down` while 16 connections keep posting: requests already sent get 200 and
# the server exits 0. Prints both image sizes, the start-up time (from `up` to healthy) and how
# long `down` took.
# Exits non-zero on the first failure, after printing the container's logs.
#
#   scripts/compose-smoke.sh                     # torch from the CPU index (the default)
#   TORCH_INDEX_URL= scripts/compose-smoke.sh    # pip's default index (needed on our build boxes)
#
# Needs docker with the compose plugin, curl and python3. Without a running engine it starts
# ../shared/tools/container-engine (where that exists) and stops it again at the end.
# Not part of the test suite: it needs an engine and builds a multi-GB image.
# Knobs: API_PORT (8000), SMOKE_TIMEOUT_S (seconds to become healthy, 180).
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${API_PORT:-8000}
BASE=http://127.0.0.1:$PORT
TIMEOUT_S=${SMOKE_TIMEOUT_S:-180}
ENGINE=../shared/tools/container-engine
WORK=$(mktemp -d)
started_engine=0
stack_up=0
logs_pid=

say() { printf '[smoke] %s\n' "$*"; }
fail() { printf '[smoke] FAIL: %s\n' "$*" >&2; exit 1; }
now() {  # seconds, with decimals (bash 5's EPOCHREALTIME, else python3: macOS ships bash 3)
    if [[ -n ${EPOCHREALTIME:-} ]]; then echo "${EPOCHREALTIME/,/.}"
    else python3 -c 'import time; print(time.time())'; fi
}
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

cleanup() {
    local rc=$?
    set +e
    if ((stack_up)); then
        if ((rc != 0)); then
            say "--- docker compose ps -a"
            docker compose ps -a || true
            say "--- last 80 lines of the api logs"
            docker compose logs --no-color --tail 80 api || true
        fi
        docker compose down -t 5 >/dev/null 2>&1 || true
    fi
    [[ -n $logs_pid ]] && kill "$logs_pid" 2>/dev/null
    if ((started_engine)); then
        "$ENGINE" stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
    if ((rc == 0)); then say "PASS"; else say "failed (exit $rc)"; fi
}
trap cleanup EXIT

for tool in docker curl python3; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done

# --- engine ----------------------------------------------------------------------------------
if ! docker info >/dev/null 2>&1; then
    [[ -x $ENGINE ]] || fail "no Docker engine answers (docker info) and $ENGINE is not there"
    say "starting the engine with $ENGINE"
    eval "$("$ENGINE")"
    started_engine=1
fi

# --- compose file ----------------------------------------------------------------------------
docker compose config -q || fail "docker-compose.yml does not validate"
docker compose --profile train --profile gpu config -q \
    || fail "docker-compose.yml does not validate with the train and gpu profiles"
docker compose -f docker-compose.yml -f docker-compose.strong.yml config -q \
    || fail "docker-compose.strong.yml does not validate as an override of docker-compose.yml"
default_services=$(docker compose config --services | paste -sd ' ' -)
[[ $default_services == api ]] \
    || fail "docker compose up would start '$default_services', expected only 'api'"
say "compose file valid; \`docker compose up\` starts: $default_services"

# --- build -----------------------------------------------------------------------------------
say "building (TORCH_INDEX_URL=${TORCH_INDEX_URL-<unset: CPU index>})"
t0=$(now)
docker compose build api >"$WORK/build.log" 2>&1 \
    || { tail -n 40 "$WORK/build.log" >&2; fail "docker compose build"; }
image=$(docker compose config --images api | head -n 1)
size=$(docker image inspect -f '{{.Size}}' "$image")
say "built $image in $(since "$t0") s; image size $((size / 1000000)) MB"

t0=$(now)
docker compose --profile train build train >"$WORK/build-train.log" 2>&1 \
    || { tail -n 40 "$WORK/build-train.log" >&2; fail "docker compose build train"; }
train_image=$(docker compose --profile train config --images train | head -n 1)
train_size=$(docker image inspect -f '{{.Size}}' "$train_image")
say "built $train_image in $(since "$t0") s; image size $((train_size / 1000000)) MB," \
    "$(((train_size - size) / 1000000)) MB more than the serving image"
docker run --rm "$train_image" --help | head -n 1 | grep -q '^usage: python -m training.run' \
    || fail "$train_image does not run python -m training.run"
extra=$(docker run --rm --entrypoint python "$image" -c \
    'import importlib.util as u; print(*[m for m in ("tensorboard", "matplotlib", "tqdm") if u.find_spec(m)])')
[[ -z $extra ]] || fail "the serving image has train-only packages: $extra"
say "$train_image answers --help; $image has no tensorboard, matplotlib or tqdm"

# --- up, healthy -----------------------------------------------------------------------------
docker compose down -t 5 >/dev/null 2>&1 || true   # a stack left over from an earlier run
t0=$(now)
stack_up=1
docker compose up -d >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; fail "docker compose up"; }
cid=$(docker compose ps -q api)
[[ -n $cid ]] || fail "no api container after up"
docker compose logs --no-color -f api >"$WORK/api.log" 2>&1 &
logs_pid=$!

first_200=
while :; do
    state=$(docker inspect -f '{{.State.Status}} {{.RestartCount}} {{.State.Health.Status}}' "$cid")
    read -r status restarts health <<<"$state"
    [[ -z $first_200 ]] && curl -fsS -o /dev/null "$BASE/healthz" 2>/dev/null && first_200=$(since "$t0")
    [[ $health == healthy ]] && break
    [[ $status == running && $restarts == 0 ]] \
        || fail "the api container is '$status' after $restarts restart(s) (exit code $(docker inspect -f '{{.State.ExitCode}}' "$cid"))"
    [[ $health == unhealthy ]] && fail "healthcheck reports unhealthy"
    awk -v s="$(since "$t0")" -v t="$TIMEOUT_S" 'BEGIN { exit !(s > t) }' \
        && fail "not healthy within $TIMEOUT_S s (health: $health)"
    sleep 0.5
done
startup=$(since "$t0")
say "healthy ${startup} s after \`up\` (/healthz first answered 200 after ${first_200:-?} s)"

# --- the container runs the way the Dockerfile says --------------------------------------------
read -r uid pid1 < <(docker compose exec -T api python -c \
    "import os; print(os.getuid(), open('/proc/1/cmdline').read().replace(chr(0), ' '))")
[[ $uid != 0 ]] || fail "the api runs as root"
[[ $pid1 == python* ]] || fail "PID 1 is '$pid1', not the server"
say "runs as uid $uid; PID 1: $(docker compose exec -T api cat /proc/1/cmdline | tr '\0' ' ')"

# --- a real photo ------------------------------------------------------------------------------
code=$(curl -sS -o "$WORK/predict.json" -w '%{http_code}' -F file=@examples/cat.png "$BASE/predict")
say "POST /predict examples/cat.png -> $code $(cat "$WORK/predict.json")"
[[ $code == 200 ]] || fail "/predict answered $code"
python3 - "$WORK/predict.json" <<'PY' || fail "/predict did not return a class"
import json, sys
body = json.load(open(sys.argv[1]))
assert isinstance(body.get("class"), str) and body["class"] in body["probabilities"], body
assert 0.0 <= body["confidence"] <= 1.0, body
PY

# --- /metrics: any worker reports the one prediction so far ------------------------------------
for _ in 1 2 3 4; do  # new connections, so the scrapes reach different worker processes
    count=$(curl -sS "$BASE/metrics" \
        | awk '/^cnn_serve_http_requests_total\{/ && /route="\/predict"/ && /status="200"/ {print $2}')
    [[ $count == 1.0 ]] || fail "/metrics reported ${count:-no} POST /predict 200s, expected 1.0"
done
say "GET /metrics: 1 prediction counted, whichever worker answered (4 scrapes)"

# --- the page at / and the Open Inference Protocol ---------------------------------------------
code=$(curl -sS -D "$WORK/page.headers" -o "$WORK/page.html" -w '%{http_code}' "$BASE/")
[[ $code == 200 ]] || fail "GET / answered $code"
grep -qi "^content-security-policy: default-src 'none'" "$WORK/page.headers" \
    || fail "GET / came without its Content-Security-Policy"
grep -q '<input' "$WORK/page.html" || fail "GET / is not the page with a file input"
say "GET / -> 200, $(wc -c <"$WORK/page.html") bytes of HTML with a strict CSP"
code=$(curl -sS -o "$WORK/v2.json" -w '%{http_code}' "$BASE/v2/health/ready")
[[ $code == 200 ]] || fail "GET /v2/health/ready answered $code"
say "GET /v2/health/ready -> 200"

# --- a bad upload: 4xx with a JSON detail ------------------------------------------------------
printf 'this is not an image\n' >"$WORK/not-an-image.txt"
code=$(curl -sS -o "$WORK/bad.json" -w '%{http_code}' -F file=@"$WORK/not-an-image.txt" "$BASE/predict")
say "POST /predict not-an-image.txt -> $code $(cat "$WORK/bad.json")"
[[ $code == 4?? ]] || fail "a text upload got $code, expected a 4xx"
python3 - "$WORK/bad.json" <<'PY' || fail "the 4xx body is not JSON with a detail"
import json, sys
body = json.load(open(sys.argv[1]))
assert isinstance(body.get("detail"), str) and body["detail"], body
PY

# --- down under load: accepted requests finish, then the server exits 0 ------------------------
# 16 keep-alive connections post examples/cat.png in a loop until their connection fails; `down`
# starts once they are going. Every request sent before `down` began must get a 200; later
# ones get a 200 or a refused/reset connection, never another status.
python3 - "$PORT" examples/cat.png "$WORK/down-load.json" "$WORK/down-go" <<'PY' &
import http.client, json, os, sys, threading, time
port, image, out, go = int(sys.argv[1]), open(sys.argv[2], "rb").read(), sys.argv[3], sys.argv[4]
body = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="cat.png"\r\n\r\n'
        + image + b"\r\n--b--\r\n")
results, lock = [], threading.Lock()

def connection():
    conn = None
    while True:
        sent = time.time()
        try:
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/predict", body, {"Content-Type": "multipart/form-data; boundary=b"})
            response = conn.getresponse()
            response.read()
            outcome = str(response.status)
        except OSError as exc:  # the server is going: stop, as a real client would back off
            refused = isinstance(exc, ConnectionRefusedError)
            with lock:
                results.append((sent, "refused" if refused else type(exc).__name__))
            return
        with lock:
            results.append((sent, outcome))
            if len(results) == 64:
                open(go, "w").close()

threads = [threading.Thread(target=connection) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
json.dump(results, open(out, "w"))
PY
load_pid=$!
for _ in $(seq 100); do [[ -e $WORK/down-go ]] && break; sleep 0.1; done
[[ -e $WORK/down-go ]] || fail "the load before \`down\` did not get going"
docker events --filter "container=$cid" --filter event=die \
    --format '{{index .Actor.Attributes "exitCode"}}' >"$WORK/die.txt" &
events_pid=$!
sleep 0.5
t0=$(now)
docker compose down >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log" >&2; fail "docker compose down"; }
down_s=$(since "$t0")
wait "$load_pid" || fail "the load generator failed"
python3 - "$WORK/down-load.json" "$t0" <<'PY' || fail "requests were lost at \`down\`"
import collections, json, sys
results, down = json.load(open(sys.argv[1])), float(sys.argv[2])
before = collections.Counter(o for t, o in results if t < down)
after = collections.Counter(o for t, o in results if t >= down)
print(f"[smoke] load across down: sent before it {dict(before)}; sent after it {dict(after)}")
assert set(before) == {"200"}, "a request sent before down did not get a 200"
assert not set(after) - {"200", "refused", "ConnectionResetError", "RemoteDisconnected",
                         "BrokenPipeError"}, "a request got something other than 200 or a closed connection"
PY
stack_up=0
sleep 0.5
kill "$events_pid" 2>/dev/null || true
exit_code=$(head -n 1 "$WORK/die.txt")
kill "$logs_pid" 2>/dev/null || true
wait "$logs_pid" 2>/dev/null || true
logs_pid=
say "down took ${down_s} s; the server exited with code ${exit_code:-?}; its last log lines:"
sed -e 's/\x1b\[[0-9;]*[A-Za-z]//g' -e 's/^/    /' "$WORK/api.log" | tail -n 4
awk -v s="$down_s" 'BEGIN { exit !(s < 14.5) }' \
    || fail "down took ${down_s} s: the server ignored SIGTERM and was killed at the 15 s stop_grace_period"
[[ $exit_code == 0 ]] || fail "the server exited with code ${exit_code:-unknown} on SIGTERM, expected 0"

say "summary: image $((size / 1000000)) MB (trainer $((train_size / 1000000)) MB)," \
    "healthy after ${startup} s, down in ${down_s} s"
